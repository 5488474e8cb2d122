import numpy as np
import pytest
from PIL import Image

from zooforge.errors import DatasetError
from zooforge.zoo import load_dataset


def _image_folder(root, classes=("cat", "dog"), per_class=3):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            mode = ["RGB", "L", "RGBA"][i % 3]        # grayscale and RGBA are converted
            arr = rng.integers(0, 255, (12, 10, {"RGB": 3, "L": 1, "RGBA": 4}[mode]), dtype=np.uint8)
            Image.fromarray(arr.squeeze(-1) if mode == "L" else arr, mode).save(root / c / f"{i}.png")
    return root


def test_image_folder(tmp_path):
    ds = load_dataset(_image_folder(tmp_path / "data"))
    assert ds.classes == ("cat", "dog") and len(ds) == 6 and ds.modality == "image"
    assert all(ds.image(i).shape == (12, 10, 3) for i in range(6))
    assert load_dataset(tmp_path / "data").fingerprint == ds.fingerprint
    Image.new("RGB", (3, 3), (9, 9, 9)).save(tmp_path / "data" / "cat" / "0.png")
    assert load_dataset(tmp_path / "data").fingerprint != ds.fingerprint    # content changed


def test_csv_paths_and_text(tmp_path):
    _image_folder(tmp_path / "img")
    (tmp_path / "d.csv").write_text("path,label\nimg/cat/0.png,1\nimg/dog/1.png,10\nimg/dog/2.png,2\n")
    ds = load_dataset(tmp_path / "d.csv")
    assert ds.classes == ("1", "2", "10")                  # numeric names sort numerically
    assert ds.labels.tolist() == [0, 2, 1]
    (tmp_path / "t.csv").write_text("text,label\nhello there,greet\nbye now,leave\nhi,greet\n")
    text = load_dataset(tmp_path / "t.csv")
    assert text.modality == "text" and text.text(1) == "bye now" and text.labels.tolist() == [0, 1, 0]


def test_npz_digits_demo_and_split(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (8, 5, 5), dtype=np.uint8)   # grayscale N x H x W
    np.savez(tmp_path / "d.npz", images=images, labels=np.array(list("abababab")))
    ds = load_dataset(tmp_path / "d.npz")
    assert ds.items.shape == (8, 5, 5, 3) and ds.classes == ("a", "b")
    digits = load_dataset("sklearn:digits")
    assert len(digits) == 1797 and digits.num_classes == 10 and digits.items.dtype == np.uint8
    train, test = load_dataset("sklearn:digits", "train"), load_dataset("sklearn:digits", "test")
    assert len(train) + len(test) == 1797 and set(np.unique(test.labels)) == set(range(10))
    demo = load_dataset("demo:shapes?n=7&seed=3")
    assert len(demo) == 28 and demo.items.shape[1:] == (32, 32, 3)
    assert np.array_equal(load_dataset("demo:shapes?n=7&seed=3").items, demo.items)    # deterministic
    assert not np.array_equal(load_dataset("demo:shapes?n=7", "test").items[:4], load_dataset("demo:shapes?n=7").items[:4])
    sub = demo.subsample(2)
    assert np.bincount(sub.labels).tolist() == [2, 2, 2, 2]


def test_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images found; expected ImageFolder layout"):
        load_dataset(tmp_path / "empty")
    _image_folder(tmp_path / "one", classes=("only",))
    with pytest.raises(DatasetError, match=r"only one class \('only'\)"):
        load_dataset(tmp_path / "one")
    (tmp_path / "nolabel.csv").write_text("path,class\na.png,x\n")
    with pytest.raises(DatasetError, match="no `label` column"):
        load_dataset(tmp_path / "nolabel.csv")
    with pytest.raises(DatasetError, match="not found: give a folder"):
        load_dataset(tmp_path / "nothing")
    with pytest.raises(DatasetError, match="unknown demo task 'blobs'"):
        load_dataset("demo:blobs")
    np.savez(tmp_path / "x.npz", pixels=np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(DatasetError, match="missing array `images`"):
        load_dataset(tmp_path / "x.npz")
    bad = _image_folder(tmp_path / "bad")
    ds = load_dataset(bad)
    (bad / "dog" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"cannot read image .*dog/1.png"):   # broken after loading: named too
        ds.image(4)
    with pytest.raises(DatasetError, match=r"1 of 6 image file\(s\) cannot be read: cannot read image .*dog/1.png"):
        load_dataset(bad)


def test_demo_text_tasks_are_seeded_sentences():
    small, large = load_dataset("demo:intent?n=4"), load_dataset("demo:intent?n=6")
    assert small.modality == "text" and small.classes == ("question", "request", "complaint", "thanks")
    assert [small.text(i) for i in range(len(small))] == [large.text(i) for i in range(len(small))]
    test = load_dataset("demo:intent?n=4", "test")
    assert test.fingerprint != small.fingerprint and test.text(0) != small.text(0)
    topics = load_dataset("demo:topics?n=2")
    assert len(topics) == 10 and all(isinstance(topics.text(i), str) and topics.text(i) for i in range(10))
    with pytest.raises(DatasetError, match="available: .*topics, intent"):
        load_dataset("demo:poems")


# ---- data read as the wrong task (issue #17) ---------------------------------------------------
def test_split_layout_is_not_read_as_classes(tmp_path):
    root = tmp_path / "data"
    _image_folder(root / "train", per_class=3)
    _image_folder(root / "val", per_class=2)
    default = load_dataset(root)
    assert default.classes == ("cat", "dog") and len(default) == 6          # train, not "train vs val"
    assert default.meta["split"] == "train" and "split 'train' of train, val" in default.summary()
    val = load_dataset(root, "val")
    assert val.classes == ("cat", "dog") and len(val) == 4
    with pytest.raises(DatasetError, match=r"split 'test' is not one of them.*--split"):
        load_dataset(root, "test")


def test_split_layout_without_train_needs_a_split(tmp_path):
    _image_folder(tmp_path / "d" / "val")
    _image_folder(tmp_path / "d" / "test")
    with pytest.raises(DatasetError, match=r"laid out in splits test, val and no split was asked for"):
        load_dataset(tmp_path / "d")


def test_mixed_split_and_class_folders_are_refused(tmp_path):
    _image_folder(tmp_path / "d" / "train")
    _image_folder(tmp_path / "d", classes=("bird",))
    with pytest.raises(DatasetError, match=r"mixes split folders \(train\) with other folders \(bird\)"):
        load_dataset(tmp_path / "d")


def test_split_asked_of_a_flat_folder_or_csv_without_split_column(tmp_path):
    _image_folder(tmp_path / "flat")
    with pytest.raises(DatasetError, match=r"no split folder 'train'"):
        load_dataset(tmp_path / "flat", "train")
    (tmp_path / "t.csv").write_text("text,label\na,x\nb,y\n")
    with pytest.raises(DatasetError, match=r"no `split` column"):
        load_dataset(tmp_path / "t.csv", "train")


def test_hidden_and_os_metadata_are_neither_classes_nor_samples(tmp_path):
    root = _image_folder(tmp_path / "data")
    for junk in ("__MACOSX", ".ipynb_checkpoints", "@eaDir"):
        _image_folder(root / junk, classes=("cat",), per_class=1)
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "cat" / "._0.png").write_bytes(b"\0\5\26\7 AppleDouble")       # resource fork, not a PNG
    (root / "cat" / ".hidden").mkdir()
    Image.new("RGB", (4, 4)).save(root / "cat" / ".hidden" / "x.png")
    ds = load_dataset(root)
    assert ds.classes == ("cat", "dog") and len(ds) == 6
    assert all(ds.image(i).shape == (12, 10, 3) for i in range(len(ds)))


@pytest.mark.parametrize("bad,line", [("", 3), ("nan", 4), ("NA", 3), ("  ", 4)])
def test_csv_missing_labels_are_refused_by_line(tmp_path, bad, line):
    rows = ["hello,greet", "bye,leave", "hi,greet"]
    rows[line - 2] = rows[line - 2].split(",")[0] + "," + bad
    (tmp_path / "t.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=rf"1 line\(s\) have an empty or missing label \(line {line}\)"):
        load_dataset(tmp_path / "t.csv")


def test_npz_nan_labels_are_refused_by_row(tmp_path):
    labels = np.array([0.0, 1.0, np.nan, 1.0])
    np.savez(tmp_path / "x.npz", images=np.zeros((4, 5, 5), np.uint8), labels=labels)
    with pytest.raises(DatasetError, match=r"empty or missing label \(sample 2\)"):
        load_dataset(tmp_path / "x.npz")


def test_summary_line():
    ds = load_dataset("sklearn:digits")
    assert ds.summary() == "sklearn:digits: 1797 images, 10 classes (174-183 per class)"


def test_unreadable_images_are_named_before_any_model_runs(tmp_path):
    root = _image_folder(tmp_path / "data", per_class=3)
    (root / "cat" / "empty.png").write_bytes(b"")
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DatasetError, match=r"2 of 8 image file\(s\) cannot be read: .*empty\.png.*--skip-bad-files"):
        load_dataset(root)
    ds = load_dataset(root, skip_bad_files=True)
    assert len(ds) == 6 and sorted(p.rsplit("/", 1)[-1] for p in ds.meta["skipped_files"]) == ["broken.jpg", "empty.png"]
    assert "2 unreadable file(s) skipped" in ds.summary()
    assert ds.fingerprint != load_dataset(tmp_path / "data", skip_bad_files=True, max_per_class=2).fingerprint


def test_a_class_with_only_unreadable_images_is_an_error(tmp_path):
    root = _image_folder(tmp_path / "data", per_class=2)
    for p in (root / "dog").iterdir():
        p.write_bytes(b"junk")
    with pytest.raises(DatasetError, match=r"every image of class\(es\) \['dog'\] is unreadable"):
        load_dataset(root, skip_bad_files=True)
