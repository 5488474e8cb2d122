"""hf: datasets (save_to_disk, Parquet, Arrow, Hub ids offline) and wds: tar shards."""

import io
import json
import pickle
import tarfile

import numpy as np
import pytest

from zooforge.errors import DatasetError
from zooforge.zoo import load_dataset

datasets = pytest.importorskip("datasets")
wds = pytest.importorskip("webdataset")


def _png(seed: int, size=(9, 11)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(buf, "png")
    return buf.getvalue()


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture
def hf_table():
    """Eight images with a ClassLabel, a list of tag ClassLabels, a float target and a caption."""
    from PIL import Image

    pngs = [_png(i) for i in range(8)]
    features = datasets.Features({
        "img": datasets.Image(), "fine_label": datasets.ClassLabel(names=["zebra", "ant"]),
        "tags": datasets.Sequence(datasets.ClassLabel(names=["red", "round", "big"])),
        "age": datasets.Value("float32"), "caption": datasets.Value("string")})
    table = datasets.Dataset.from_dict({
        "img": [Image.open(io.BytesIO(p)) for p in pngs], "fine_label": [0, 1] * 4,
        "tags": [[0], [1], [0, 1], [2], [0, 2], [1, 2], [], [0, 1, 2]],
        "age": [1.5, 2.0, 3.25, 4.0, 5.5, 6.0, 7.75, 8.0],
        "caption": [f"a picture number {i}" for i in range(8)]}, features=features)
    return table, pngs


def test_save_to_disk_keeps_class_label_names_and_reads_images_lazily(tmp_path, hf_table):
    table, pngs = hf_table
    table.save_to_disk(str(tmp_path / "disk"))
    ds = load_dataset(f"hf:{tmp_path / 'disk'}")
    assert ds.task == "classification" and ds.modality == "image"
    assert set(ds.classes) == {"zebra", "ant"}                      # ClassLabel names, not codes
    assert [ds.classes[c] for c in ds.labels] == ["zebra", "ant"] * 4
    assert type(ds.items).__name__ == "ArrowImages" and not ds.in_memory
    for i in (0, 5):
        np.testing.assert_array_equal(ds.image(i), _pixels(pngs[i]))
    sub = ds.subset([5, 2], "two")                                  # a view, not a decoded copy
    np.testing.assert_array_equal(sub.image(0), _pixels(pngs[5]))
    assert len(pickle.dumps(ds.items)) < 2000                       # workers get paths, not bytes


def test_the_label_column_says_the_task(tmp_path, hf_table):
    table, _ = hf_table
    table.save_to_disk(str(tmp_path / "disk"))
    tags = load_dataset(f"hf:{tmp_path / 'disk'}?label=tags")
    assert tags.task == "multilabel" and tags.classes == ("red", "round", "big")
    assert tags.labels[2].tolist() == [1, 1, 0] and tags.labels[6].tolist() == [0, 0, 0]
    ages = load_dataset(f"hf:{tmp_path / 'disk'}?label=age")
    assert ages.task == "regression" and ages.classes == ("age",)
    np.testing.assert_allclose(ages.labels[:, 0], table["age"])
    # --task overrides the column's type; disagreeing with the spec's own task is refused
    assert load_dataset(f"hf:{tmp_path / 'disk'}?label=fine_label", task="regression").task == "regression"
    with pytest.raises(DatasetError, match="disagree"):
        load_dataset(f"hf:{tmp_path / 'disk'}?label=age&task=regression", task="classification")


def test_parquet_file_and_hub_layout_folder_with_splits(tmp_path, hf_table):
    table, pngs = hf_table
    table.to_parquet(str(tmp_path / "one.parquet"))
    ds = load_dataset(f"hf:{tmp_path / 'one.parquet'}")
    assert type(ds.items).__name__ == "ParquetImages" and set(ds.classes) == {"zebra", "ant"}
    np.testing.assert_array_equal(ds.image(7), _pixels(pngs[7]))
    data = tmp_path / "hub" / "data"
    data.mkdir(parents=True)
    table.select(range(6)).to_parquet(str(data / "train-00000-of-00001.parquet"))
    table.select(range(6, 8)).to_parquet(str(data / "test-00000-of-00001.parquet"))
    train = load_dataset(f"hf:{tmp_path / 'hub'}")
    assert len(train) == 6 and train.meta["split"] == "train" and train.meta["splits"] == ["test", "train"]
    test = load_dataset(f"hf:{tmp_path / 'hub'}", "test")
    assert len(test) == 2
    np.testing.assert_array_equal(test.image(1), _pixels(pngs[7]))
    assert load_dataset(f"hf:{tmp_path / 'hub'}?split=test").fingerprint == test.fingerprint
    with pytest.raises(DatasetError, match="splits test, train"):
        load_dataset(f"hf:{tmp_path / 'hub'}", "validation")


def test_dataset_dict_splits_text_columns_and_arrow_files(tmp_path, hf_table):
    table, _ = hf_table
    datasets.DatasetDict(train=table, validation=table.select(range(4))).save_to_disk(str(tmp_path / "dd"))
    val = load_dataset(f"hf:{tmp_path / 'dd'}", "validation")
    assert len(val) == 4 and val.meta["splits"] == ["train", "validation"]
    text = load_dataset(f"hf:{tmp_path / 'dd'}?text=caption")
    assert text.modality == "text" and text.text(3) == "a picture number 3"
    arrow = next((tmp_path / "dd" / "train").glob("*.arrow"))
    assert len(load_dataset(f"hf:{arrow}")) == 8


def test_fingerprint_follows_the_content(tmp_path, hf_table):
    table, _ = hf_table
    table.to_parquet(str(tmp_path / "a.parquet"))
    first = load_dataset(f"hf:{tmp_path / 'a.parquet'}").fingerprint
    assert load_dataset(f"hf:{tmp_path / 'a.parquet'}").fingerprint == first
    table.map(lambda r: {"fine_label": 1 - r["fine_label"]}).to_parquet(str(tmp_path / "a.parquet"))
    assert load_dataset(f"hf:{tmp_path / 'a.parquet'}").fingerprint != first


def test_bad_hf_input_is_named(tmp_path, hf_table, monkeypatch):
    table, _ = hf_table
    table.save_to_disk(str(tmp_path / "disk"))
    with pytest.raises(DatasetError, match="unknown option.*colour"):
        load_dataset(f"hf:{tmp_path / 'disk'}?colour=red")
    with pytest.raises(DatasetError, match="no column 'nope'.*img, fine_label"):
        load_dataset(f"hf:{tmp_path / 'disk'}?label=nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="neither a save_to_disk dataset"):
        load_dataset(f"hf:{tmp_path / 'empty'}")
    with pytest.raises(DatasetError, match="give it as hf:"):
        table.to_parquet(str(tmp_path / "x.parquet"))
        load_dataset(str(tmp_path / "x.parquet"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(DatasetError, match="not in the local Hugging Face cache.*save_to_disk"):
        load_dataset("hf:someone/not-downloaded-here")


def _write_shards(root, n_shards=3, per_shard=6, label="cls", bad=()):
    paths = []
    for s in range(n_shards):
        path = root / f"shard-{s:03d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for i in range(per_shard):
                k = s * per_shard + i
                sample = {"__key__": f"{k:06d}", "png": b"not a png" if k in bad else _png(k)}
                if label == "cls":
                    sample["cls"] = str(k % 3)
                else:
                    sample["json"] = json.dumps({"tags": [["cat", "dog"][k % 2]] + (["toy"] if k % 3 == 0 else []),
                                                 "weight": k + 0.5})
                sink.write(sample)
        paths.append(path)
    return paths


def test_shards_by_brace_pattern_in_one_pass(tmp_path):
    _write_shards(tmp_path)
    ds = load_dataset(f"wds:{tmp_path}/shard-{{000..002}}.tar")
    assert len(ds) == 18 and ds.task == "classification" and ds.classes == ("0", "1", "2")
    assert ds.labels.tolist() == [k % 3 for k in range(18)]
    np.testing.assert_array_equal(ds.image(13), _pixels(_png(13)))
    assert ds.item_name(13).endswith("shard-002.tar:000013")
    # the index pass decoded every image already: loading never decodes them a second time
    assert ds.items.checked and ds.items.found_unreadable() == []
    restored = pickle.loads(pickle.dumps(ds.subset([13, 2], "two").items))   # what a worker gets
    np.testing.assert_array_equal(restored.read(0), _pixels(_png(13)))
    assert load_dataset(f"wds:{tmp_path}/shard-{{000..002}}.tar").fingerprint == ds.fingerprint
    assert load_dataset(f"wds:{tmp_path}/shard-{{000..001}}.tar").fingerprint != ds.fingerprint


def test_shard_json_labels_give_multilabel_and_regression(tmp_path):
    _write_shards(tmp_path, label="json")
    pattern = f"wds:{tmp_path}/shard-{{000..002}}.tar?label=json"
    tags = load_dataset(pattern + "&key=tags")
    assert tags.task == "multilabel" and tags.classes == ("cat", "dog", "toy")
    assert tags.labels[3].tolist() == [0, 1, 1]
    weight = load_dataset(pattern + "&key=weight")
    assert weight.task == "regression"
    np.testing.assert_allclose(weight.labels[:, 0], np.arange(18) + 0.5)


def test_unreadable_shard_images_are_named_or_skipped(tmp_path):
    _write_shards(tmp_path, bad=(4,))
    pattern = f"wds:{tmp_path}/shard-{{000..002}}.tar"
    with pytest.raises(DatasetError, match=r"1 of 18 image file\(s\) cannot be read.*shard-000.tar:000004"):
        load_dataset(pattern)
    ds = load_dataset(pattern, skip_bad_files=True)
    assert len(ds) == 17 and ds.meta["skipped_files"][0].endswith("shard-000.tar:000004")


def test_bad_shard_input_is_named(tmp_path):
    _write_shards(tmp_path, n_shards=1)
    with pytest.raises(DatasetError, match="1 of 2 shard"):
        load_dataset(f"wds:{tmp_path}/shard-{{000..001}}.tar")
    with pytest.raises(DatasetError, match="no label members with extension 'txt'"):
        load_dataset(f"wds:{tmp_path}/shard-000.tar?label=txt")
    with pytest.raises(DatasetError, match="shards have no splits"):
        load_dataset(f"wds:{tmp_path}/shard-000.tar", "test")
    with tarfile.open(tmp_path / "z.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "shard-000.tar", arcname="inner.tar")
    with pytest.raises(DatasetError, match="uncompressed"):
        load_dataset(f"wds:{tmp_path}/z.tar.gz")


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_the_shard_index_reads_tar_headers_as_tarfile_does(tmp_path, fmt):
    from zooforge.zoo.shards import _members

    names = ["a.png", "deep/" * 30 + "sample.cls", "dir/unicode.txt", "empty.bin"]   # ustar: prefix + name
    if fmt != tarfile.USTAR_FORMAT:
        names += ["x" * 99 + ".json", "dir/ünïcode.png"]   # longer than a ustar name; not ASCII
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w", format=fmt) as tar:
        for k, name in enumerate(names):
            data = bytes(range(256)) * k
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        folder = tarfile.TarInfo("a-folder")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)                                # not a sample: skipped
    with tarfile.open(path) as tar:
        expected = [(m.name, m.offset_data, m.size) for m in tar if m.isfile()]
    with open(path, "rb") as fh:
        got = [(name, offset, size) for name, offset, size, data in _members(fh)]
    assert got == expected


@pytest.mark.parametrize("spec", ["demo:shapes?n=4", "demo:tags?n=12", "demo:size?n=12"])
@pytest.mark.parametrize("fmt", ["disk", "parquet", "wds"])
def test_export_round_trips_every_kind(tmp_path, spec, fmt):
    from zooforge.zoo.export import export

    ds = load_dataset(spec)
    back = load_dataset(export(ds, tmp_path / ("out.parquet" if fmt == "parquet" else "out"), fmt, shard_size=5))
    assert back.task == ds.task and len(back) == len(ds)
    assert back.classes == ds.classes or ds.task == "regression"
    np.testing.assert_allclose(back.labels, ds.labels)
    for i in (0, len(ds) - 1):
        np.testing.assert_array_equal(back.image(i), ds.image(i))


def test_cli_export_prints_the_spec_that_reads_it_back(tmp_path):
    from typer.testing import CliRunner

    from zooforge.cli import app

    result = CliRunner().invoke(app, ["export", "demo:shapes?n=3", str(tmp_path / "s"), "--shard-size", "5"])
    assert result.exit_code == 0, result.output
    spec = result.output.split("read them back as ")[1].split()[0]
    assert spec == f"wds:{tmp_path / 's'}/train-{{000000..000002}}.tar"
    assert len(load_dataset(spec)) == 12
    bad = CliRunner().invoke(app, ["export", "demo:shapes?n=3", str(tmp_path / "p.csv"), "--format", "parquet"])
    assert bad.exit_code == 1 and "needs a .parquet file name" in bad.output


def test_export_keeps_several_regression_targets(tmp_path):
    from zooforge.zoo.data import Dataset
    from zooforge.zoo.export import export

    base = load_dataset("demo:size?n=10")
    two = Dataset("two", "image", base.items, np.hstack([base.labels, 2 * base.labels + 1]), ("radius", "area"),
                  "x", {}, "regression")
    for fmt, out in (("wds", tmp_path / "s"), ("parquet", tmp_path / "t.parquet")):
        back = load_dataset(export(two, out, fmt, shard_size=4))
        assert back.task == "regression" and back.labels.shape == (10, 2)
        np.testing.assert_allclose(back.labels, two.labels)
