import itertools

import pytest
import torch
from torch import nn

from zooforge.errors import ZooforgeError
from zooforge.reassembly.blocks import cut
from zooforge.reassembly.compose import compose
from zooforge.reassembly.stitch import Assembly, Stitch, init_stitch, load_assembly
from zooforge.zoo import load_catalogue
from zooforge.zoo.backbone import Backbone

ARCHS = ["demo/effnet-shapes", "demo/convnext-shapes", "demo/resnet-colour", "demo/vit-glyphs",
         "demo/mambaout-colour", "demo/byobnet-counting"]


@pytest.fixture(scope="module")
def zoo():
    entries = {e.id: e for e in load_catalogue("demo")}
    out = {}
    for mid in ARCHS:
        b = Backbone.from_entry(entries[mid])
        b.model.eval()
        out[mid] = (entries[mid], b, *cut(b))
    return out


@pytest.mark.parametrize("mid", ARCHS)
def test_chained_blocks_reproduce_the_model(zoo, mid):
    _, b, blocks, infos = zoo[mid]
    x = torch.randn(2, 3, 32, 32)
    seen = {}
    last = infos[-1].modules[-1]
    h = b.model.get_submodule(last).register_forward_hook(lambda _m, _i, o: seen.__setitem__("o", o))
    with torch.no_grad():
        b.model.forward_features(x)
        h.remove()
        y = x
        for blk, info in zip(blocks, infos):
            y = blk(y)
            assert tuple(y.shape[1:]) == info.out_shape
    ref = seen["o"]
    if infos[-1].layout == "tokens":      # compare patch tokens only: blocks after 0 drop the class token
        assert y.shape[1] == ref.shape[-1]
    else:
        ref = ref.permute(0, 3, 1, 2) if infos[-1].layout == "nhwc" else ref
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
    assert sum(i.params for i in infos) <= b.num_params
    assert all(i.gmacs > 0 for i in infos)


def test_prefix_is_pruned_to_what_it_runs(zoo):
    _, b, blocks, infos = zoo["demo/vit-glyphs"]
    runs = ("patch_embed.", "cls_token", "pos_embed", "reg_token", "norm_pre.", "blocks.0.")
    expected = sum(p.numel() for n, p in b.model.named_parameters() if n.startswith(runs))
    assert infos[0].params == expected          # the final norm and the head are pruned away


@pytest.mark.parametrize("a,b", list(itertools.permutations(ARCHS, 2)))
def test_every_pair_of_architectures_stitches(zoo, a, b):
    _, _, blocks_a, infos_a = zoo[a]
    _, _, blocks_b, infos_b = zoo[b]
    ka, kb = len(blocks_a) // 2, len(blocks_a) // 2
    kb = min(max(1, kb), len(blocks_b) - 1)
    first = nn.Sequential(*blocks_a[:ka])
    second = nn.Sequential(*blocks_b[kb:])
    c_in = infos_a[ka - 1].out_shape[0]
    c_out, h, w = infos_b[kb].in_shape
    stitch = Stitch(c_in, c_out, infos_a[ka - 1].out_shape[1:], (h, w))
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        src = first(x)
        tgt = torch.randn(8, c_out, h, w)
        init_stitch(stitch, src, tgt)
        model = Assembly([first, second], [stitch], infos_b[-1].out_shape[0], 5).eval()
        assert model(x).shape == (8, 5)


def test_least_squares_stitch_recovers_a_linear_map():
    torch.manual_seed(0)
    src = torch.randn(16, 6, 4, 4)
    true = nn.Conv2d(6, 3, 1)
    tgt = true(src).detach()
    s = Stitch(6, 3, (4, 4), (4, 4))
    r2 = init_stitch(s, src, tgt, ridge=1e-8)
    assert r2 == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(s.proj.weight, true.weight, rtol=1e-3, atol=1e-4)


def test_compose_trains_and_its_recipe_rebuilds_an_identical_model(tmp_path):
    r = compose("demo", "demo:shapes?n=16", budget_gmacs=0.002, stages=3, epochs=1, stitch_epochs=1,
                models=["demo/effnet-*", "demo/vit-glyphs", "demo/resnet-colour"], baseline=False, out_dir=tmp_path)
    assert r.status in ("OPTIMAL", "FEASIBLE") and len(r.stages) == 3
    assert r.gmacs <= 0.002 and 0.0 <= r.accuracy <= 1.0
    rebuilt, recipe = load_assembly(tmp_path)
    assert [s["model"] for s in recipe["stages"]] == [row["model"] for row in r.stages]
    x = torch.randn(4, 3, 32, 32)
    r.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), r.model(x), rtol=0, atol=0)


def test_compose_says_plainly_when_the_budget_is_too_small():
    with pytest.raises(ZooforgeError, match="smallest feasible budget is"):
        compose("demo", "demo:shapes?n=12", budget_gmacs=1e-6, stages=2, epochs=1,
                models=["demo/convnext-shapes", "demo/resnet-colour"], baseline=False)


def test_load_assembly_names_missing_files(tmp_path):
    with pytest.raises(ZooforgeError, match="recipe.json"):
        load_assembly(tmp_path)
