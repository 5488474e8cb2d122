"""``make hub-demo``: the demo zoo published on a loopback Hub is listed, downloaded and ranked,
then ranked again offline from the download cache, with the same scores as the local demo zoo."""

import pytest


def test_hub_demo_lists_downloads_and_ranks_the_published_demo_zoo_then_reruns_offline(tmp_path, capfd):
    pytest.importorskip("huggingface_hub")
    from zooforge.demo.hub import ORG, main

    assert main(["--work", str(tmp_path), "--data", "demo:shapes?n=6"]) == 0
    out = capfd.readouterr().out
    assert out.count(f"{ORG}/byobnet-counting") >= 2                   # ranked online, then offline
    requests = int(out.split(" file request(s) reached the Hub")[0].rsplit("\n", 1)[-1])
    assert requests >= 2 * 12                                           # config + weights of every model
    catalogue = (tmp_path / "hub.toml").read_text()
    assert catalogue.count("revision = ") == 12 and catalogue.count("[[model]]") == 12
    assert any((tmp_path / "hf-home").rglob("model.safetensors"))


def test_published_weights_are_the_demo_models():
    import torch

    from zooforge.demo.hub import publish_demo_zoo
    from zooforge.zoo import load_catalogue
    from zooforge.zoo.backbone import Backbone
    from zooforge.zoo.catalogue import CatalogueEntry
    from zooforge.zoo.loaders import timm_backbone
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        repos = publish_demo_zoo(Path(tmp))
        assert len(repos) == 12 and all(r.library_name == "timm" for r in repos.values())
        local = next(e for e in load_catalogue("demo") if e.id == "demo/resnet-textures")
        folder = repos["zooforge-demo/resnet-textures"].commits[-1][1]
        hub_like = CatalogueEntry(id="x", source="local", name="test_resnet", checkpoint=str(folder / "model.safetensors"),
                                  num_classes=local.num_classes, input_size=local.input_size, crop_pct=local.crop_pct)
        a, b = Backbone.from_entry(local), timm_backbone(hub_like)
        x = torch.rand(2, 3, 32, 32)
        torch.testing.assert_close(a.model.eval()(x), b.model.eval()(x))
