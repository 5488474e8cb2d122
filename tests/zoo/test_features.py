import numpy as np
import pytest
from PIL import Image

from zooforge.errors import DatasetError
from zooforge.zoo import CatalogueEntry, load_dataset
from zooforge.zoo.backbone import Backbone
from zooforge.zoo.features import extract


@pytest.fixture(scope="module")
def backbone():
    return Backbone.from_entry(CatalogueEntry(id="t/resnet", source="timm", name="test_resnet", pretrained=False,
                                              num_classes=4, input_size=(3, 32, 32)))


def test_extract_outputs_and_cache_hit(backbone, tmp_path):
    ds = load_dataset("demo:shapes?n=10")
    fs = extract(backbone, ds, layers=backbone.stage_names[:2], cache_dir=tmp_path, batch_size=16, progress=False)
    assert fs.features.shape == (40, backbone.model.num_features) and fs.features.dtype == np.float32
    np.testing.assert_allclose(fs.source_probs.sum(1), 1.0, rtol=1e-5)
    assert set(fs.layers) == set(backbone.stage_names[:2])
    assert not fs.provenance["cache_hit"] and fs.provenance["samples_per_s"] > 0
    again = extract(backbone, ds, layers=backbone.stage_names[:2], cache_dir=tmp_path, progress=False)
    assert again.provenance["cache_hit"]
    np.testing.assert_array_equal(again.features, fs.features)
    # a different layer set is a different entry
    assert not extract(backbone, ds, cache_dir=tmp_path, progress=False).provenance["cache_hit"]


def test_corrupt_entry_is_detected_and_recomputed(backbone, tmp_path):
    ds = load_dataset("demo:textures?n=5")
    first = extract(backbone, ds, cache_dir=tmp_path, progress=False)
    data = next((tmp_path / "features").rglob("data.safetensors"))
    raw = bytearray(data.read_bytes())
    raw[-5] ^= 0xFF                                            # flip bits in the arrays
    data.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="corrupt"):
        second = extract(backbone, ds, cache_dir=tmp_path, progress=False)
    assert not second.provenance["cache_hit"]
    np.testing.assert_array_equal(second.features, first.features)
    data.write_bytes(data.read_bytes()[:100])                  # truncated
    with pytest.warns(UserWarning, match="corrupt"):
        assert not extract(backbone, ds, cache_dir=tmp_path, progress=False).provenance["cache_hit"]


def test_interrupted_extraction_resumes_from_finished_shards(backbone, tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    ds = load_dataset(root)
    broken = ds.items[15]
    content = open(broken, "rb").read()
    open(broken, "wb").write(b"garbage")
    # the fingerprint is of the dataset as given; keep it so the rerun addresses the same entry
    with pytest.raises(DatasetError, match="cannot read image"):
        extract(backbone, ds, cache_dir=tmp_path / "c", shard_size=8, batch_size=4, num_workers=0, progress=False)
    shards = sorted((tmp_path / "c" / "partial").rglob("shard-*.safetensors"))
    assert [s.name for s in shards] == ["shard-000000.safetensors"]     # the first shard survived
    open(broken, "wb").write(content)
    calls = []
    original = Backbone.forward
    monkeypatch.setattr(Backbone, "forward", lambda self, x, layers=(): calls.append(len(x["x"])) or original(self, x, layers))
    resumed = extract(backbone, ds, cache_dir=tmp_path / "c", shard_size=8, batch_size=4, num_workers=0, progress=False)
    assert sum(calls) == 12                                    # only the 12 unfinished samples ran
    fresh = extract(backbone, ds, use_cache=False, batch_size=4, num_workers=0, progress=False)
    np.testing.assert_allclose(resumed.features, fresh.features, rtol=1e-5, atol=1e-6)


def test_modality_mismatch(backbone, tmp_path):
    (tmp_path / "t.csv").write_text("text,label\na,x\nb,y\n")
    with pytest.raises(ValueError, match="takes image input but dataset .* is text"):
        extract(backbone, load_dataset(tmp_path / "t.csv"), progress=False)


def test_dataloader_workers_spawned_by_pickle_give_the_same_features(backbone, tmp_path, monkeypatch):
    """Folder datasets are decoded in DataLoader workers. Workers started with "spawn" (macOS and
    Windows; CUDA-safe) receive the collate function by pickle: it must be the small preprocessor,
    not the backbone, and give exactly the in-process features."""
    import pickle

    import zooforge.zoo.features as features

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "data" / c / f"{i}.png")
    ds = load_dataset(tmp_path / "data")
    assert not ds.in_memory
    shipped = pickle.dumps(backbone.preprocessor())
    assert len(shipped) < len(pickle.dumps(backbone.model)) / 10
    monkeypatch.setattr(features, "_WORKER_CONTEXT", "spawn")
    workers = extract(backbone, ds, use_cache=False, batch_size=4, num_workers=2, progress=False)
    inline = extract(backbone, ds, use_cache=False, batch_size=4, num_workers=0, progress=False)
    np.testing.assert_array_equal(workers.features, inline.features)
    np.testing.assert_array_equal(workers.source_probs, inline.source_probs)


def test_a_batch_that_overflows_in_half_precision_is_run_again_in_float32(tmp_path, monkeypatch):
    """fp16 ends at 65504 and some models' activations pass it: under autocast such a batch came back
    NaN or inf, and every estimator then refused the model. It is now run again in float32. CPU
    autocast (bf16) stands in for the GPU's here, and the model overflows whenever it is on."""
    import torch

    from zooforge.zoo import features

    b = Backbone.from_entry(CatalogueEntry(id="t/resnet", source="timm", name="test_resnet", pretrained=False,
                                           num_classes=4, input_size=(3, 32, 32)))
    ds = load_dataset("demo:shapes?n=10")
    plain = extract(b, ds, batch_size=16, use_cache=False, progress=False)
    real = b.forward

    def overflowing(inputs, layers=()):
        out = real(inputs, layers)
        if torch.is_autocast_enabled("cpu"):
            out["features"] = out["features"] * float("inf")
        return out

    monkeypatch.setattr(b, "forward", overflowing)
    monkeypatch.setattr(features, "_amp_active", lambda device, amp: True)
    monkeypatch.setattr(features, "_autocast", lambda device, amp: torch.autocast("cpu", dtype=torch.bfloat16))
    fs = extract(b, ds, cache_dir=tmp_path, batch_size=16, progress=False)
    assert fs.provenance["float32_batches"] == 3                          # 40 images, batches of 16
    np.testing.assert_allclose(fs.features, plain.features, rtol=1e-5, atol=1e-6)
    assert extract(b, ds, cache_dir=tmp_path, batch_size=16, progress=False).provenance["cache_hit"]


def test_features_that_are_not_finite_in_float32_fail_the_model_and_are_never_cached(tmp_path, monkeypatch):
    import torch

    from zooforge.errors import ZooforgeError
    from zooforge.selection.rank import score_model

    b = Backbone.from_entry(CatalogueEntry(id="t/broken", source="timm", name="test_resnet", pretrained=False,
                                           num_classes=4, input_size=(3, 32, 32)))
    with torch.no_grad():
        next(b.model.parameters()).fill_(float("nan"))                   # a corrupted checkpoint
    ds = load_dataset("demo:shapes?n=4")
    with pytest.raises(ZooforgeError, match=r"model 't/broken' gives \d+ NaN or infinite values in its features for "
                                            r"16 of the 16 samples"):
        score_model(b, ds, ["logme"], cache_dir=tmp_path)
    # never stored: a NaN in the cache would outlive its cause (an overflow the engine has since caught)
    assert not extract(b, ds, cache_dir=tmp_path, progress=False).provenance["cache_hit"]
