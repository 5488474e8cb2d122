import numpy as np
import pytest
import torch

from zooforge.errors import ZooforgeError
from zooforge.tuning.loop import TrainConfig, train
from zooforge.tuning.methods import METHODS, Adapter, build, load_adapters, save_adapters
from zooforge.zoo import CatalogueEntry
from zooforge.zoo.backbone import Backbone


def _backbone(name):
    args = {"img_size": 32} if name.startswith("test_vit") else {}
    return Backbone.from_entry(CatalogueEntry(id=f"t/{name}", source="timm", name=name, pretrained=False,
                                              input_size=(3, 32, 32), model_args=args))


def _body_params(task, predicate):
    return sum(p.numel() for n, p in task.body.named_parameters() if predicate(n, p))


def _head(task):
    return sum(p.numel() for p in task.head.parameters())


@pytest.mark.parametrize("name", ["test_vit", "test_resnet", "test_convnext", "test_mambaout"])
def test_each_method_trains_exactly_its_parameters(name):
    for method in METHODS:
        torch.manual_seed(0)
        task = build(_backbone(name), 5, method)
        trainable = task.trainable_params
        if method == "linear":
            assert trainable == _head(task) == task.head.in_features * 5 + 5
        elif method == "full":
            assert trainable == task.total_params
        elif method == "bitfit":
            assert trainable == _head(task) + _body_params(task, lambda n, p: n.endswith("bias"))
        elif method in ("adapter", "adaptformer"):
            adapters = [m for m in task.body.modules() if isinstance(m, Adapter)]
            assert adapters
            assert trainable == _head(task) + sum(p.numel() for a in adapters for p in a.parameters())
        elif method == "lora":
            lora = _body_params(task, lambda n, p: "lora_" in n)
            assert lora > 0 and trainable == _head(task) + lora
        elif method == "ia3":
            ia3 = _body_params(task, lambda n, p: "ia3_" in n)
            assert ia3 > 0 and trainable == _head(task) + ia3
        # nothing else trains: every trainable body tensor belongs to the method
        assert 0 < task.trainable_ratio <= 1


def test_lora_on_vit_counts_rank_times_fan_in_plus_fan_out():
    task = build(_backbone("test_vit"), 3, "lora", rank=4)
    qkv = [m for n, m in task.body.named_modules() if n.endswith("attn.qkv")]
    expected = sum(4 * (m.in_features + m.out_features) for m in qkv)
    assert _body_params(task, lambda n, p: "lora_" in n) == expected


@pytest.mark.parametrize("method", ["adapter", "adaptformer", "lora", "ia3"])
@pytest.mark.parametrize("name", ["test_vit", "test_resnet", "test_mambaout"])
def test_attaching_a_method_keeps_the_pretrained_function(name, method):
    # zero-initialised adapter up-projections, LoRA B = 0 and IA3 vectors = 1 leave features unchanged
    torch.manual_seed(0)
    plain = _backbone(name)
    x = plain.prepare(np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8))["x"]
    plain.model.eval()
    with torch.no_grad():
        before = plain.model.forward_head(plain.model.forward_features(x), pre_logits=True)
    task = build(plain, 3, method)
    task.eval()
    with torch.no_grad():
        torch.testing.assert_close(task.features(x), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["test_vit", "test_resnet"])
@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_merge_and_unmerge_leave_outputs_unchanged(name, method):
    torch.manual_seed(0)
    task = build(_backbone(name), 3, method)
    with torch.no_grad():                                   # move away from the identity initialisation
        for n, p in task.body.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    task.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = task(x)
        torch.testing.assert_close(task.merge()(x), ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(task.unmerge()(x), ref, rtol=1e-4, atol=1e-5)


def test_bottleneck_adapters_refuse_to_merge():
    with pytest.raises(ZooforgeError, match="nothing to merge"):
        build(_backbone("test_resnet"), 3, "adapter").merge()


def _toy(n_per_class=24, seed=0):
    # two classes told apart by the mean brightness of the red channel: separable
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.normal(0, 0.3, (2 * n_per_class, 3, 32, 32)).astype(np.float32))
    y = torch.arange(2).repeat_interleave(n_per_class)
    x[y == 1, 0] += 1.0
    return x, y


@pytest.mark.parametrize("method", METHODS)
def test_loss_decreases_on_a_separable_task(method):
    torch.manual_seed(0)
    task = build(_backbone("test_resnet"), 2, method)
    x, y = _toy()
    result = train(task, x, y, TrainConfig(epochs=4, batch_size=16, lr=5e-3, progress=False, seed=0))
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0]
    assert result.trainable_params == task.trainable_params


@pytest.mark.parametrize("method", ["adapter", "adaptformer", "lora", "ia3", "bitfit"])
def test_adapters_save_alone_and_reattach(tmp_path, method):
    torch.manual_seed(0)
    task = build(_backbone("test_vit"), 3, method)
    x, y = _toy(8)
    train(task, x, torch.remainder(y, 3), TrainConfig(epochs=1, batch_size=8, progress=False))
    task.eval()
    path = save_adapters(task, tmp_path)
    size = path.stat().st_size
    assert size < 4 * task.total_params               # only the trainable tensors, not the whole model
    torch.manual_seed(0)                              # the same base weights, freshly built
    again = load_adapters(_backbone("test_vit"), tmp_path)
    again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), task(x))


def test_load_adapters_rejects_another_model(tmp_path):
    save_adapters(build(_backbone("test_resnet"), 3, "adapter"), tmp_path)
    with pytest.raises(ZooforgeError, match="trained on 't/test_resnet'"):
        load_adapters(_backbone("test_vit"), tmp_path)


def test_unknown_method_lists_choices():
    with pytest.raises(ValueError, match="choose one of linear, full, bitfit"):
        build(_backbone("test_resnet"), 3, "prompt")


def test_hf_image_and_text_models_take_every_method(tiny_vit_folder, tiny_bert_folder):
    for folder, sample in ((tiny_vit_folder, np.zeros((2, 32, 32, 3), np.uint8)),
                           (tiny_bert_folder, ["hello world", "zoo forge"])):
        for method in METHODS:
            b = Backbone.from_entry(CatalogueEntry(id="hf/x", source="hf", name=str(folder)))
            inputs = b.prepare(sample)
            x = inputs["input_ids"] if b.modality == "text" else inputs["pixel_values"]
            task = build(b, 4, method)
            assert task(x).shape == (2, 4)
            assert 0 < task.trainable_ratio <= 1
            if method in ("adapter", "adaptformer"):
                assert any(isinstance(m, Adapter) for m in task.body.modules())


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_merge_and_unmerge_on_hugging_face_models(tiny_vit_folder, tiny_bert_folder, method):
    """PEFT's LoRA/IA3 on HF ViT and BERT layers: folding the update into the base weights and taking
    it out again changes no output, and a merged model really has the update in its base weights."""
    for folder, sample in ((tiny_vit_folder, np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), np.uint8)),
                           (tiny_bert_folder, ["hello world", "zoo forge"])):
        torch.manual_seed(0)
        b = Backbone.from_entry(CatalogueEntry(id="hf/x", source="hf", name=str(folder)))
        inputs = b.prepare(sample)
        x = inputs["input_ids"] if b.modality == "text" else inputs["pixel_values"]
        task = build(b, 3, method)
        with torch.no_grad():
            for p in task.body.parameters():
                if p.requires_grad:
                    p.add_(0.1 * torch.randn_like(p))
        task.eval()
        frozen = {n: p.detach().clone() for n, p in task.body.named_parameters() if not p.requires_grad}
        with torch.no_grad():
            ref = task(x)
            merged = task.merge()
            torch.testing.assert_close(merged(x), ref, rtol=1e-4, atol=1e-5)
            changed = [n for n, p in task.body.named_parameters() if n in frozen and not torch.equal(p, frozen[n])]
            assert changed, "merging must write the update into the base weights"
            torch.testing.assert_close(task.unmerge()(x), ref, rtol=1e-4, atol=1e-5)
            for n, p in task.body.named_parameters():
                if n in frozen:
                    torch.testing.assert_close(p, frozen[n], rtol=1e-5, atol=1e-6)
