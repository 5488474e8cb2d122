"""Training and scoring regression and multi-label targets: losses, scores, heads, tune end to end."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, r2_score

from zooforge.tuning.loop import TrainConfig, evaluate, train
from zooforge.tuning.objectives import task_of, init_head, objective


def test_scores_are_the_tasks_metrics():
    rng = np.random.default_rng(0)
    y = torch.as_tensor(rng.normal(size=(50, 2)))
    out = y.float() + 0.3 * torch.randn(50, 2)
    assert objective("regression").score(out, y) == pytest.approx(
        r2_score(y.numpy(), out.numpy(), multioutput="uniform_average"), rel=1e-5)
    tags = torch.as_tensor((rng.random((50, 3)) < 0.4).astype(np.int8))
    logits = torch.randn(50, 3) + 2 * tags
    expected = np.mean([average_precision_score(tags[:, k].numpy(), logits[:, k].numpy()) for k in range(3)])
    assert objective("multilabel").score(logits, tags) == pytest.approx(expected, rel=1e-6)
    assert objective("classification").score(torch.eye(3)[[0, 1, 2, 1]], torch.tensor([0, 1, 2, 0])) == 0.75


def test_regression_loss_does_not_depend_on_the_targets_unit():
    y = torch.randn(40, 1, dtype=torch.float64)
    pred = y.float() + 0.5 * torch.randn(40, 1)
    base = objective("regression", y).loss(pred, y)
    scaled = objective("regression", 1000 * y).loss(1000 * pred, 1000 * y)
    assert scaled.item() == pytest.approx(base.item(), rel=1e-4)
    assert objective("regression", y).loss(torch.full_like(pred, float(y.mean())), y).item() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="training targets' scale"):
        objective("regression").loss(pred, y)


def test_labels_say_the_task_and_heads_start_at_the_base_rate():
    assert task_of(torch.tensor([0, 1])) == "classification"
    assert task_of(torch.zeros(3, 2, dtype=torch.float64)) == "regression"
    assert task_of(torch.zeros(3, 2, dtype=torch.int8)) == "multilabel"
    head = torch.nn.Linear(4, 2)
    init_head(head, "regression", torch.tensor([[1.0, 10.0], [3.0, 30.0]], dtype=torch.float64))
    assert head.bias.tolist() == pytest.approx([2.0, 20.0])
    init_head(head, "multilabel", torch.tensor([[1, 0], [1, 0], [0, 0], [1, 1]], dtype=torch.int8))
    assert torch.sigmoid(head.bias).tolist() == pytest.approx([0.75, 0.25], rel=1e-4)


@pytest.mark.parametrize("kind", ["regression", "multilabel"])
def test_the_loop_learns_each_kind_and_stops_early_on_its_score(kind):
    torch.manual_seed(0)
    x = torch.randn(240, 6)
    w = torch.randn(6, 2)
    y = (x @ w).double() + 3 if kind == "regression" else (x @ w > 0).to(torch.int8)
    model = torch.nn.Linear(6, 2)
    init_head(model, kind, y[:200])
    before = evaluate(model, x[200:], y[200:])
    res = train(model, x[:200], y[:200], TrainConfig(epochs=30, lr=3e-2, batch_size=32, patience=5, progress=False))
    after = evaluate(model, x[200:], y[200:])
    assert after > 0.95 and after > before + 0.2
    assert "train_accuracy" not in res.history[0] and res.best_val_accuracy is not None


def test_tune_reports_r2_and_map_and_regression_heads_keep_their_unit(tmp_path):
    from zooforge.tuning.methods import load_adapters
    from zooforge.tuning.tune import tune
    from zooforge.zoo import load_dataset
    from zooforge.zoo.backbone import Backbone
    from zooforge.zoo.catalogue import load_catalogue

    tags = tune("demo/convnext-shapes", "demo:tags?n=120", "linear", catalogue="demo",
                loop=TrainConfig(epochs=3, progress=False))
    assert tags.metric == "map" and tags.task.head.out_features == 4 and 0.3 < tags.accuracy <= 1
    # the radius in pixels and the same radius in hundredths of a pixel train alike
    ds = load_dataset("demo:size?n=160")
    scores = []
    for factor in (1.0, 100.0):
        scaled = type(ds)(ds.name, ds.modality, ds.items, ds.labels * factor, ds.classes,
                          f"{ds.fingerprint}{factor}", ds.meta, ds.task)
        r = tune("demo/convnext-shapes", scaled, "linear", catalogue="demo", out_dir=tmp_path / str(factor),
                 loop=TrainConfig(epochs=4, progress=False))
        assert r.metric == "r2" and r.record()["metric"] == "r2"
        scores.append(r.accuracy)
    assert scores[0] > 0.2 and scores[1] == pytest.approx(scores[0], abs=0.02)
    # the saved head predicts in the targets' unit after reloading
    entry = next(e for e in load_catalogue("demo") if e.id == "demo/convnext-shapes")
    again = load_adapters(Backbone.from_entry(entry), tmp_path / "100.0")
    train_part = ds.split(0.8, 0)[0]                        # tune's own training split
    assert float(again.target_shift[0]) == pytest.approx(100 * train_part.labels.mean(), rel=1e-5)
