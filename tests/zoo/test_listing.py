"""Catalogues from timm's registry (offline: the registry and pretrained cfgs ship with timm)."""

import json

import pytest
from typer.testing import CliRunner

from zooforge.cli import app
from zooforge.errors import ZooforgeError
from zooforge.zoo import load_catalogue
from zooforge.zoo.catalogue import CatalogueEntry
from zooforge.zoo.cost import COST_FILE
from zooforge.zoo.listing import catalogue_from_timm, dump_catalogue, timm_cost


def test_timm_listing_carries_each_tags_preprocessing_and_round_trips(tmp_path):
    entries = catalogue_from_timm(["convnext_atto*", "vit_tiny_patch16*"], cache_dir=tmp_path)
    names = [e.name for e in entries]
    assert "convnext_atto.d2_in1k" in names and all("." in n for n in names)      # tagged names only
    vit = next(e for e in entries if e.name.startswith("vit_tiny_patch16_384"))
    assert vit.input_size == (3, 384, 384) and vit.num_classes == 1000 and vit.pretrained
    assert vit.interpolation == "bicubic" and vit.mean is not None and vit.crop_pct is not None
    in22k = next(e for e in entries if "in21k" in e.name or "in22k" in e.name)
    assert any(t.startswith("data:in2") for t in in22k.tags)
    assert any(t.startswith("license:") for t in entries[0].tags)
    path = dump_catalogue(entries, tmp_path / "zoo.toml", "a test listing")
    assert load_catalogue(path) == entries


def test_cost_filters_use_zooforges_count_and_cache_it_per_architecture(tmp_path):
    # resnet50.a3_in1k is evaluated at 160 x 160 (2.1 GMACs there), the others at 224 (4.1)
    small = catalogue_from_timm(["resnet18.*", "resnet50.*"], max_gmacs=2.0, cache_dir=tmp_path)
    assert small and all(e.name.startswith("resnet18.") for e in small)
    costs = json.loads((tmp_path / COST_FILE).read_text())
    params, gmacs = timm_cost("resnet18", (3, 224, 224), 1000, cache_dir=tmp_path)
    assert params == 11_689_512 and 1.7 < gmacs < 1.9                # the published 1.8 GMACs
    assert any(k.startswith("resnet50|3x224x224|1000|") for k in costs)
    few = catalogue_from_timm(["resnet18.*", "resnet50.*"], max_params=12, cache_dir=tmp_path)
    assert {e.name.split(".")[0] for e in few} == {"resnet18"}


def test_listing_errors_say_what_matched(tmp_path):
    with pytest.raises(ZooforgeError, match="no timm model matches"):
        catalogue_from_timm(["no_such_arch*"], cache_dir=tmp_path)
    with pytest.raises(ZooforgeError, match="none of the .* fits"):
        catalogue_from_timm(["resnet50.*"], max_gmacs=0.001, cache_dir=tmp_path)


def test_revision_is_a_catalogue_field_and_is_validated(tmp_path):
    entry = CatalogueEntry(id="m", source="hf", name="org/model", revision="0123abcd")
    back = load_catalogue(dump_catalogue([entry], tmp_path / "z.toml"))
    assert back[0].revision == "0123abcd"
    (tmp_path / "bad.toml").write_text('[[model]]\nid = "m"\nsource = "hf"\nname = "o/m"\nrevision = "a@b"\n')
    with pytest.raises(ZooforgeError, match="`revision` must be a commit sha"):
        load_catalogue(tmp_path / "bad.toml")


def test_timm_revision_pins_the_hub_id():
    from zooforge.zoo.loaders import timm_at_revision

    name, kwargs = timm_at_revision("resnet18.a1_in1k", "abc123", {})
    assert name == "resnet18.a1_in1k" and kwargs["pretrained_cfg_overlay"]["hf_hub_id"] == "timm/resnet18.a1_in1k@abc123"
    assert timm_at_revision("hf-hub:timm/resnet18.a1_in1k", "abc", {})[0] == "hf-hub:timm/resnet18.a1_in1k@abc"


def test_cli_catalogue_timm_writes_a_loadable_file(tmp_path):
    out = tmp_path / "zoo.toml"
    result = CliRunner().invoke(app, ["catalogue", "timm", "convnext_atto*", "--out", str(out),
                                      "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and len(load_catalogue(out)) >= 2
    bad = CliRunner().invoke(app, ["catalogue", "timm", "no_such_arch*", "--out", str(out)])
    assert bad.exit_code == 1 and "no timm model matches" in bad.output


def test_a_loaded_model_takes_its_cost_from_the_listing_and_counts_an_architecture_once(monkeypatch):
    """The cost the listing counted on the meta device is the loaded model's (same params, same
    GMACs), so loading it runs no FLOP counter; a remembered entry whose parameter count disagrees
    is counted afresh; a backbone around another network is never served the remembered cost."""
    from torch import nn

    import zooforge.zoo.backbone as backbone_module
    from zooforge.zoo.backbone import Backbone
    from zooforge.zoo.catalogue import CatalogueEntry
    from zooforge.zoo.cost import cost_file, count_gmacs, read_costs, write_costs

    entry = CatalogueEntry(id="c", source="timm", name="test_convnext", pretrained=False, input_size=(3, 64, 64))
    listed = timm_cost("test_convnext", (3, 64, 64), 1000)                     # the listing's count
    counted = []
    monkeypatch.setattr(backbone_module, "count_gmacs", lambda *a, **k: counted.append(1) or count_gmacs(*a, **k))
    b = Backbone.from_entry(entry)
    assert (b.num_params, b.gmacs) == listed and not counted                   # served, not counted
    assert abs(count_gmacs(b.model, **b.example_inputs()) - b.gmacs) < 1e-12  # and what a count gives
    path = cost_file()
    write_costs(path, {k: [v[0] + 1, 99.0] for k, v in read_costs(path).items()})   # a stale, wrong entry
    again = Backbone.from_entry(entry)
    assert again.gmacs == listed[1] and len(counted) == 1                      # disagreeing params: recounted
    assert Backbone.from_entry(entry).gmacs == listed[1] and len(counted) == 1  # and remembered again
    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x)

    other = again.with_model(Other())
    assert other.cost_key is None and other.gmacs != listed[1]
    bigger = Backbone.from_entry(CatalogueEntry(id="c2", source="timm", name="test_convnext", pretrained=False,
                                                input_size=(3, 96, 96)))
    assert bigger.gmacs > listed[1] and len(counted) == 3                       # another input size: its own
