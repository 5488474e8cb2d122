"""The real hub path, without internet: unmodified huggingface_hub, timm and transformers clients
against a loopback Hub (``zooforge.zoo.hub_server``) through ``HF_ENDPOINT``, in subprocesses that
run the CLI as a user would."""

import json
import os
import subprocess
import sys

import pytest
import torch

from zooforge.zoo.hub_server import HubRepo, HubServer


def _timm_repo(folder, seed):
    """A timm hub repo (config.json + model.safetensors) of test_resnet with a 4-class head."""
    import timm
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    model = timm.create_model("test_resnet", num_classes=4)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    cfg = {"architecture": "test_resnet", "num_classes": 4, "num_features": model.num_features,
           "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                              "crop_pct": 1.0, "interpolation": "bilinear", "num_classes": 4, "classifier": "fc"}}
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def _vit_repo(folder):
    """A transformers image-classification repo: a tiny ViT and its image processor."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=3)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("hub")
    v1, v2 = _timm_repo(root / "r1", seed=1), _timm_repo(root / "r2", seed=2)
    return {"zf/resnet-a": HubRepo([(f"{'1' * 40}", v1), (f"{'2' * 40}", v2)], pipeline_tag="image-classification",
                                   library_name="timm", downloads=10),
            "zf/tiny-vit": HubRepo([(f"{'3' * 40}", _vit_repo(root / "vit"))], pipeline_tag="image-classification",
                                   library_name="transformers", downloads=5)}


def _run(args, env, cwd):
    full = os.environ | {"OMP_NUM_THREADS": "1", "ZOOFORGE_CACHE_DIR": str(cwd / "features")} | env
    full.pop("HF_HUB_OFFLINE", None) if "HF_HUB_OFFLINE" not in env else None
    return subprocess.run([sys.executable, "-m", "zooforge.cli", *args], env=full, cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_list_rank_download_then_offline_from_the_cache(repos, tmp_path):
    with HubServer(repos) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")}
        listed = _run(["catalogue", "hub", "--task", "image-classification", "--out", "zoo.toml"], env, tmp_path)
        assert listed.returncode == 0, listed.stdout + listed.stderr
        text = (tmp_path / "zoo.toml").read_text()
        assert f'revision = "{"2" * 40}"' in text and 'name = "hf-hub:zf/resnet-a"' in text   # pinned to main's commit
        assert text.index("zf/resnet-a") < text.index("zf/tiny-vit")                             # by downloads
        ranked = _run(["rank", "zoo.toml", "demo:shapes?n=4", "-m", "logme", "--bootstrap", "0", "--out", "r.csv", "-q"],
                      env, tmp_path)
        assert ranked.returncode == 0, ranked.stdout + ranked.stderr
        assert any("/resolve/" + "2" * 40 + "/model.safetensors" in r for r in hub.requests)
        assert any(r.startswith("GET /zf/tiny-vit/resolve/" + "3" * 40) for r in hub.requests)
        served = len(hub.requests)
    # the server is gone: offline, both models load from HF_HOME
    offline = _run(["rank", "zoo.toml", "demo:shapes?n=4", "-m", "logme", "--bootstrap", "0", "--out", "r2.csv", "-q"],
                   env | {"HF_HUB_OFFLINE": "1"}, tmp_path)
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert (tmp_path / "r.csv").read_text().splitlines()[0] == (tmp_path / "r2.csv").read_text().splitlines()[0]
    assert served == len(hub.requests)


def test_a_pinned_revision_is_what_loads(repos, tmp_path):
    zoo = tmp_path / "zoo.toml"
    zoo.write_text("".join(f'[[model]]\nid = "{rev[0]}"\nsource = "timm"\nname = "hf-hub:zf/resnet-a"\nrevision = "{rev}"\n\n'
                           for rev in ("1" * 40, "2" * 40)))
    with HubServer(repos) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")}
        ranked = _run(["rank", str(zoo), "demo:shapes?n=4", "-m", "logme", "--bootstrap", "0", "--json", "-q"], env, tmp_path)
        assert ranked.returncode == 0, ranked.stderr
    rows = {r["model"]: r for r in json.loads(ranked.stdout)}
    assert rows["1"]["logme"] != rows["2"]["logme"]                      # two commits, two sets of weights
    assert any("/resolve/" + "1" * 40 + "/" in r for r in hub.requests)


def test_a_missing_repo_and_a_server_dying_mid_file_are_that_models_errors(repos, tmp_path):
    zoo = tmp_path / "zoo.toml"
    zoo.write_text('[[model]]\nid = "ghost"\nsource = "hf"\nname = "zf/no-such-repo"\n\n'
                   '[[model]]\nid = "local"\nsource = "timm"\nname = "test_resnet"\npretrained = false\n'
                   'input_size = [3, 32, 32]\n')
    with HubServer(repos) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")}
        ranked = _run(["rank", str(zoo), "demo:shapes?n=4", "-m", "logme", "--bootstrap", "0", "--json", "-q"], env, tmp_path)
    assert ranked.returncode == 3, ranked.stderr                         # one model failed; the table is there
    rows = {r["model"]: r for r in json.loads(ranked.stdout)}
    assert rows["local"]["logme"] is not None and rows["ghost"]["error"]
    assert "not found" in rows["ghost"]["error"].lower() or "404" in rows["ghost"]["error"]
    cut = tmp_path / "cut.toml"
    cut.write_text('[[model]]\nid = "a"\nsource = "timm"\nname = "hf-hub:zf/resnet-a"\n')
    with HubServer(repos, drop_after=2000) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf2")}
        dropped = _run(["rank", str(cut), "demo:shapes?n=4", "-m", "logme", "--bootstrap", "0", "--json", "-q"], env, tmp_path)
    assert dropped.returncode in (1, 3), dropped.stderr
    assert not list((tmp_path / "hf2").rglob("model.safetensors"))       # no truncated file left as if complete
