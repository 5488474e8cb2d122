"""DeRy on Hugging Face vision models: cut points from the encoder's layer list, and blocks of timm
and HF models, CNNs and ViTs, stitched in either direction (issue #20)."""

import importlib

import pytest
import torch

from zooforge.errors import ZooforgeError
from zooforge.reassembly.blocks import cut
from zooforge.reassembly.solve import Solution
from zooforge.reassembly.stitch import load_assembly, save_assembly
from zooforge.zoo import CatalogueEntry, load_catalogue
from zooforge.zoo.backbone import Backbone
from zooforge.zoo.cost import count_params

transformers = pytest.importorskip("transformers")
plan_module = importlib.import_module("zooforge.reassembly.plan")     # the package's `plan` is the function

TINY = dict(image_size=32, num_labels=3)
VIT = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, patch_size=8, **TINY)
ARCHS = {   # name -> (model class, config)
    "vit": ("ViTForImageClassification", transformers.ViTConfig(**VIT)),
    "deit": ("DeiTForImageClassification", transformers.DeiTConfig(**VIT)),
    "dinov2": ("Dinov2ForImageClassification", transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=2, patch_size=8, **TINY)),
    "convnext": ("ConvNextForImageClassification", transformers.ConvNextConfig(
        hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], **TINY)),
    "swin": ("SwinForImageClassification", transformers.SwinConfig(
        embed_dim=16, depths=[1, 1, 1], num_heads=[1, 2, 4], patch_size=2, window_size=4, **TINY)),
    "resnet": ("ResNetForImageClassification", transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_labels=3)),
    # relative position bias over the class token and the patch grid: a block without the class token cannot run
    "beit-relative": ("BeitForImageClassification", transformers.BeitConfig(use_relative_position_bias=True, **VIT)),
}


def _entry(folder, name: str) -> CatalogueEntry:
    cls_name, config = ARCHS[name]
    path = folder / name
    if not path.exists():
        config.architectures = [cls_name]
        torch.manual_seed(0)
        getattr(transformers, cls_name)(config).save_pretrained(path)
        transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return CatalogueEntry(id=f"hf/{name}", source="hf", name=str(path))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("hf-vision")


def _base_hidden(b: Backbone, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """The base model's last_hidden_state, or the output of module ``layer`` on the way."""
    seen = {}
    handle = b.model.get_submodule(layer).register_forward_hook(
        lambda _m, _a, o: seen.setdefault("o", o[0] if isinstance(o, tuple) else o)) if layer else None
    with torch.no_grad():
        out = b.model.base_model(pixel_values=x).last_hidden_state
    if handle:
        handle.remove()
    return seen["o"] if layer else out


@pytest.mark.parametrize("name", ["convnext", "resnet", "swin"])
def test_the_blocks_of_an_hf_encoder_without_prefix_tokens_are_the_encoder(folder, name):
    """No class token to drop: chained end to end, the blocks give the base model's last hidden state
    (Swin's normed tokens folded into their grid), and they hold every parameter of the features."""
    b = Backbone.from_entry(_entry(folder, name))
    blocks, infos = cut(b)
    assert len(blocks) >= 3 and all(i.gmacs > 0 for i in infos)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = x
        for blk, info in zip(blocks, infos):
            y = blk(y)
            assert tuple(y.shape[1:]) == info.out_shape
    want = _base_hidden(b, x)
    if want.dim() == 3:                                     # Swin: (B, N, C) tokens -> (B, C, H, W)
        want = want.transpose(1, 2).reshape(y.shape)
    torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-5)
    # ConvNeXt's pooler norm acts on the pooled vector, outside the features; it is no block's
    unused = count_params(b.model.base_model.layernorm) if name == "convnext" else 0
    assert sum(i.params for i in infos) == count_params(b.model.base_model) - unused


@pytest.mark.parametrize("name,prefix", [("vit", 1), ("deit", 2), ("dinov2", 1)])
def test_hf_vit_blocks_drop_the_prefix_tokens_and_end_in_the_final_norm(folder, name, prefix):
    b = Backbone.from_entry(_entry(folder, name))
    blocks, infos = cut(b)
    assert [i.layout for i in infos] == ["tokens"] * 4 and blocks[0].prefix_tokens == prefix
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        first = blocks[0](x)                                # embeddings + layer 0, patch tokens as a 4x4 map
    want = _base_hidden(b, x, infos[0].modules[0])[:, prefix:]
    torch.testing.assert_close(first, want.transpose(1, 2).reshape(first.shape), rtol=1e-5, atol=1e-6)
    base_name = b.model.base_model_prefix
    assert blocks[-1].tail is not None and blocks[-1].tail.names == [f"{base_name}.layernorm"]
    assert sum(i.params for i in infos) == count_params(b.model.base_model)


def test_an_hf_model_whose_layers_need_its_class_token_is_refused_with_the_reason(folder):
    with pytest.raises(ZooforgeError, match=r"hf/beit-relative.*block 1 .*does not run on its own"):
        cut(Backbone.from_entry(_entry(folder, "beit-relative")))


def test_a_text_model_is_refused_as_not_an_image_model(tiny_bert_folder):
    with pytest.raises(ZooforgeError, match="text model; DeRy composes image backbones"):
        cut(Backbone.from_entry(CatalogueEntry(id="hf/bert", source="hf", name=str(tiny_bert_folder))))


def _mixed(p, models: list[str]) -> Solution:
    """The assembly that takes stage k from ``models[k]``."""
    cands = [next(c for c in row if c.model == m) for row, m in zip(p.problem.stages, models)]
    choice = tuple(row.index(c) for row, c in zip(p.problem.stages, cands))
    return Solution(choice, cands, sum(c.score for c in cands), sum(c.params for c in cands),
                    sum(c.gmacs for c in cands))


@pytest.mark.parametrize("first,second", [
    ("demo/convnext-shapes", "hf/vit"),       # timm CNN -> HF ViT
    ("hf/vit", "demo/convnext-shapes"),       # HF ViT -> timm CNN
    ("hf/convnext", "demo/vit-glyphs"),       # HF CNN -> timm ViT
    ("demo/vit-glyphs", "hf/swin"),           # timm ViT -> HF Swin
])
def test_timm_and_hf_blocks_stitch_both_ways_and_the_recipe_rebuilds_them(folder, tmp_path, first, second):
    demo = {e.id: e for e in load_catalogue("demo")}
    entries = [demo[m] if m in demo else _entry(folder, m.removeprefix("hf/")) for m in (first, second)]
    p = plan_module.plan(entries, "demo:shapes?n=8", None, stages=2, probe=32)
    assert not p.left_out
    model, r2, recipe = p.assemble(_mixed(p, [first, second]))
    assert len(r2) == 1 and 0.0 < r2[0] <= 1.0       # a least-squares stitch explains some of the target map
    x = p.probe.images(p.backbones[first])[:4]
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (4, p.dataset.num_classes) and torch.isfinite(out).all()
    save_assembly(model, recipe, tmp_path)
    rebuilt, _ = load_assembly(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), out, rtol=0, atol=0)
