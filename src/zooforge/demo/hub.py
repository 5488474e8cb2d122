"""``make hub-demo``: a hub-wide audit's first steps against a Hub, offline.

The demo zoo's trained timm models are published as timm Hub repositories (``config.json`` with the
architecture and its ``pretrained_cfg``, and ``model.safetensors``) on a loopback Hub
(:class:`zooforge.zoo.hub_server.HubServer`, 127.0.0.1). Then, as a user would, in fresh processes
with ``HF_ENDPOINT`` pointing at it and an empty ``HF_HOME``:

1. ``zooforge catalogue hub --task image-classification --library timm`` lists it, each model
   pinned to its commit;
2. ``zooforge rank`` on that catalogue downloads every model through timm's own hub client;
3. the same ``rank`` with ``HF_HUB_OFFLINE=1`` and the server gone loads from the download cache.

    python -m zooforge.demo.hub [--work DIR] [--data demo:shapes?n=40]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ORG = "zooforge-demo"


def publish_demo_zoo(root: Path) -> dict:
    """One timm Hub repository per trained demo model under ``root``; {repo id: HubRepo}."""
    import torch
    from safetensors.torch import load_file, save_file

    from zooforge.zoo import load_catalogue
    from zooforge.zoo.backbone import Backbone
    from zooforge.zoo.hub_server import HubRepo, sha_of

    repos = {}
    for entry in load_catalogue("demo"):
        if not entry.checkpoint:
            continue                                 # the random-init baselines have no weights to publish
        backbone = Backbone.from_entry(entry)
        folder = root / entry.id.split("/")[-1]
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.to(torch.float32).contiguous() for k, v in load_file(entry.checkpoint).items()}
        save_file(state, str(folder / "model.safetensors"))
        t, cfg = backbone.transform, backbone.model.pretrained_cfg
        (folder / "config.json").write_text(json.dumps({
            "architecture": entry.name, "num_classes": backbone.num_source_classes,
            "num_features": backbone.model.num_features,
            "pretrained_cfg": {"input_size": list(t.input_size), "mean": list(t.mean), "std": list(t.std),
                               "crop_pct": t.crop_pct, "interpolation": t.interpolation,
                               "num_classes": backbone.num_source_classes, "classifier": cfg.get("classifier")}}))
        repos[f"{ORG}/{folder.name}"] = HubRepo([(sha_of(folder), folder)], pipeline_tag="image-classification",
                                                library_name="timm", tags=list(entry.tags))
    return repos


def _zooforge(args: list[str], env: dict) -> int:
    print(f"\n$ zooforge {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "zooforge.cli", *args], env=env).returncode


def main(argv: list[str] | None = None) -> int:
    from zooforge.zoo.hub_server import HubServer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="keep the repos, HF_HOME and catalogue here")
    ap.add_argument("--data", default="demo:shapes?n=40")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="zooforge-hub-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    repos = publish_demo_zoo(work / "repos")
    env = os.environ | {"HF_HOME": str(work / "hf-home"), "ZOOFORGE_CACHE_DIR": str(work / "features"),
                        "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    catalogue = str(work / "hub.toml")
    with HubServer(repos) as hub:
        print(f"a loopback Hub at {hub.url} serves {len(repos)} timm repositories under {ORG}/", flush=True)
        env["HF_ENDPOINT"] = hub.url
        rc = _zooforge(["catalogue", "hub", "--task", "image-classification", "--library", "timm", "--out", catalogue],
                       env)
        rc = rc or _zooforge(["rank", catalogue, args.data, "--bootstrap", "20"], env)
        downloads = sum(1 for r in hub.requests if "/resolve/" in r)
    print(f"\n{downloads} file request(s) reached the Hub; the server is gone now.", flush=True)
    rc = rc or _zooforge(["rank", catalogue, args.data, "--bootstrap", "20"], env | {"HF_HUB_OFFLINE": "1"})
    print(f"\nwork folder: {work} (repos, HF_HOME with the downloads, hub.toml)")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
