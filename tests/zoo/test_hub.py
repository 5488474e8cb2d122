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


def test_offline_with_an_empty_cache_names_each_repo_and_the_download_that_fetches_it(repos, tmp_path):
    """What a user offline is told is enough: the hub repository of each model's weights and the
    `hf download` that fetches it; running those commands (against the loopback hub) is all it
    takes for the same offline rank to succeed."""
    import re
    from pathlib import Path

    zoo = tmp_path / "zoo.toml"
    zoo.write_text('[[model]]\nid = "a"\nsource = "timm"\nname = "hf-hub:zf/resnet-a"\n\n'
                   '[[model]]\nid = "vit"\nsource = "hf"\nname = "zf/tiny-vit"\n')
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    args = ["rank", str(zoo), "demo:shapes?n=4", "-m", "logme", "--bootstrap", "0", "-q"]
    before = _run(args, env, tmp_path)
    assert before.returncode == 3, before.stdout + before.stderr
    out = " ".join(before.stdout.split())
    commands = re.findall(r"^hf download \S+$", before.stdout, re.M)
    assert sorted(commands) == ["hf download zf/resnet-a", "hf download zf/tiny-vit"], before.stdout
    assert "the hub repository zf/resnet-a is not in the local Hugging Face cache" in out
    hf = Path(sys.executable).with_name("hf")
    with HubServer(repos) as hub:
        for command in commands:
            got = subprocess.run([str(hf), *command.split()[1:]], env=os.environ | env | {
                "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}, capture_output=True, text=True, timeout=300)
            assert got.returncode == 0, got.stdout + got.stderr
    after = _run(args, env, tmp_path)
    assert after.returncode == 0, after.stdout + after.stderr


def test_failures_of_one_cause_are_one_group():
    from zooforge.errors import group_failures

    def missing(model, repo):
        return (f"BackboneLoadError: cannot load weights for model '{model}' (timm '{model}'): the hub repository "
                f"{repo} is not in the local Hugging Face cache and offline. Fix: run `hf download {repo}`.")

    failures = [("m1", missing("m1", "org/m1")), ("m2", "BackboneLoadError: model 'm2': bad `model_args` {}"),
                ("m3", missing("m3", "org/m3")), ("m4", missing("m4", "org/m4"))]
    groups = group_failures(failures)
    assert [whats for _, whats in groups] == [["m1", "m3", "m4"], ["m2"]]
    assert groups[0][0] == failures[0][1]                                 # the first message, whole
    assert group_failures([("a", "x failed"), ("b", "y failed")]) == [("x failed", ["a"]), ("y failed", ["b"])]


def _dataset_repo(folder, n_train, seed):
    """A Hub dataset repo in the Hub's Parquet layout: images with a ClassLabel, train and test splits."""
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["round", "square"])})
    n = n_train + 4
    table = datasets.Dataset.from_dict({"img": [Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8))
                                                for _ in range(n)], "label": [i % 2 for i in range(n)]}, features=features)
    (folder / "data").mkdir(parents=True)
    table.select(range(n_train)).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    table.select(range(n_train, n)).to_parquet(str(folder / "data" / "test-00000-of-00001.parquet"))
    return folder


def test_a_hub_dataset_downloads_pins_a_revision_and_reloads_offline(tmp_path):
    """hf:<hub id> through the unmodified datasets client: `rank` reads it from the loopback hub, a
    pinned older commit is what loads, an unknown id is named as such, and with the server gone the
    same data (same fingerprint) comes from the cache for each revision (``datasets.load_dataset``
    alone serves the last one loaded, whatever the revision)."""
    pytest.importorskip("datasets")
    old, new = _dataset_repo(tmp_path / "d1", 8, seed=1), _dataset_repo(tmp_path / "d2", 12, seed=2)
    zoo = tmp_path / "zoo.toml"
    zoo.write_text('[[model]]\nid = "r"\nsource = "timm"\nname = "test_resnet"\npretrained = false\n'
                   'input_size = [3, 32, 32]\n')
    probe = ("import json, sys\nfrom zooforge.zoo import load_dataset\nfrom zooforge.errors import DatasetError\n"
             "out = {}\nfor spec in sys.argv[1:]:\n    try:\n        d = load_dataset(spec)\n"
             "        out[spec] = [len(d), list(d.classes), d.fingerprint]\n"
             "    except DatasetError as exc:\n        out[spec] = str(exc)\nprint(json.dumps(out))\n")
    specs = ["hf:zf/shapes", f"hf:zf/shapes?revision={'a' * 40}", "hf:zf/shapes?split=test", "hf:zf/no-such-data"]

    def load(env):
        full = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"} | {"OMP_NUM_THREADS": "1"} | env
        got = subprocess.run([sys.executable, "-c", probe, *specs], env=full, capture_output=True, text=True,
                             timeout=300, cwd=tmp_path)
        assert got.returncode == 0, got.stderr
        return json.loads(got.stdout.splitlines()[-1])

    env = {"HF_HOME": str(tmp_path / "hf")}
    configs = tmp_path / "configs"
    for name in ("small", "large"):                        # a repo of two configurations' folders
        _dataset_repo(tmp_path / name, 4, seed=3)
        (configs / name).parent.mkdir(exist_ok=True)
        (tmp_path / name / "data").rename(configs / name)
    specs += ["hf:zf/configs", "hf:zf/configs?config=small"]
    with HubServer({}, datasets={"zf/shapes": HubRepo([("a" * 40, old), ("b" * 40, new)]),
                                 "zf/configs": [configs]}) as hub:
        online = load(env | {"HF_ENDPOINT": hub.url})
        assert "several configurations (large, small)" in online["hf:zf/configs"]
        assert online["hf:zf/configs?config=small"][0] == 4
        assert not any("/configs/resolve/" in r and "large" in r for r in hub.requests)   # refused before downloading
        ranked = _run(["rank", str(zoo), "hf:zf/shapes", "-m", "logme", "--bootstrap", "0", "--json", "-q"],
                      env | {"HF_ENDPOINT": hub.url}, tmp_path)
        assert ranked.returncode == 0, ranked.stdout + ranked.stderr
        assert json.loads(ranked.stdout)[0]["logme"] is not None
        assert any(r.startswith("GET /datasets/zf/shapes/resolve/" + "b" * 40) for r in hub.requests)
    assert online["hf:zf/shapes"][:2] == [12, ["round", "square"]], online  # main: the newer commit
    assert online[specs[1]][0] == 8                                               # the pinned older one
    assert online["hf:zf/shapes?split=test"][0] == 4
    assert "the hub has no such" in online["hf:zf/no-such-data"]
    offline = load(env | {"HF_HUB_OFFLINE": "1"})
    for spec in specs[:3]:                     # main is still the newer commit, the pinned one the older
        assert offline[spec] == online[spec], spec                                # same rows, same fingerprint
    assert "not in the local Hugging Face cache" in offline["hf:zf/no-such-data"]
