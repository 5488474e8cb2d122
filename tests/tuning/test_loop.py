import pytest
import torch
from torch import nn

from zooforge.tuning.loop import TrainConfig, learning_rate, train


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def _model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))


class _Interrupt(Exception):
    pass


class _Crashes(nn.Module):
    """Raises on the forward call number ``at``: a kill in the middle of an epoch."""

    def __init__(self, inner, at):
        super().__init__()
        self.inner, self.at, self.calls = inner, at, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.at:
            raise _Interrupt
        return self.inner(x)


def test_resume_from_a_mid_run_checkpoint_is_bit_identical(tmp_path):
    x, y = _data()
    cfg = dict(epochs=5, batch_size=16, grad_accum=2, lr=1e-2, seed=3, progress=False)
    straight = _model()
    train(straight, x, y, TrainConfig(**cfg))
    crashing = _Crashes(_model(), at=6 * 2 + 3)       # 6 micro-batches an epoch: dies inside epoch 3
    with pytest.raises(_Interrupt):
        train(crashing, x, y, TrainConfig(**cfg, checkpoint_dir=str(tmp_path)))
    resumed = _Crashes(_model(), at=-1)               # a fresh process: new model, same seed
    result = train(resumed, x, y, TrainConfig(**cfg, checkpoint_dir=str(tmp_path)))
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5]
    for (name, a), b in zip(straight.state_dict().items(), resumed.inner.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_lone_last_sample_joins_the_batch_before_it_and_resume_still_matches(tmp_path):
    """33 samples in batches of 16 leave one over: batch norm cannot train on a batch of one (it
    raised where the map is 1x1), so it joins the last full batch; every sample is still seen, and the
    schedule's step count (which a resume recomputes) is the batches actually run."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(33, 4, 1, 1, generator=g), torch.arange(33) % 2

    def net():
        torch.manual_seed(1)
        return nn.Sequential(nn.Conv2d(4, 8, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))

    sizes = []
    model = net()
    model[1].register_forward_pre_hook(lambda _m, a: sizes.append(len(a[0])))
    cfg = dict(epochs=3, batch_size=16, lr=1e-2, seed=3, progress=False)
    result = train(model, x, y, TrainConfig(**cfg))
    assert sizes == [16, 17] * 3 and len(result.history) == 3
    straight = net()
    train(straight, x, y, TrainConfig(**cfg))
    crashing = _Crashes(net(), at=2 * 2 + 1)          # 2 batches an epoch: dies inside epoch 3
    with pytest.raises(_Interrupt):
        train(crashing, x, y, TrainConfig(**cfg, checkpoint_dir=str(tmp_path)))
    resumed = _Crashes(net(), at=-1)
    train(resumed, x, y, TrainConfig(**cfg, checkpoint_dir=str(tmp_path)))
    for (name, a), b in zip(straight.state_dict().items(), resumed.inner.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoint_from_another_config_is_refused(tmp_path):
    x, y = _data()
    train(_model(), x, y, TrainConfig(epochs=1, progress=False, checkpoint_dir=str(tmp_path)))
    with pytest.raises(ValueError, match=r"belongs to another run: its config differ.*lr 0.001 there, 0.5 here"):
        train(_model(), x, y, TrainConfig(epochs=1, lr=0.5, progress=False, checkpoint_dir=str(tmp_path)))


def test_checkpoint_of_another_model_or_data_is_refused_and_left_untouched(tmp_path):
    # Issue #17: the same settings on another model (or other weights, or another dataset) used to
    # resume the first run's checkpoint and report its accuracy under the second model's name.
    x, y = _data()
    cfg = TrainConfig(epochs=2, progress=False, checkpoint_dir=str(tmp_path))
    train(_model(), x, y, cfg)
    before = (tmp_path / "last.pt").read_bytes()
    torch.manual_seed(7)
    other = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))   # same shapes
    with pytest.raises(ValueError, match=r"its model weights differ"):
        train(other, x, y, cfg)
    wider_head = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    with pytest.raises(ValueError, match=r"its model weights differ"):       # a message, not a shape traceback
        train(wider_head, x, y, cfg)
    x2, y2 = _data(seed=5)
    with pytest.raises(ValueError, match=r"its training data differ"):
        train(_model(), x2, y2, cfg)
    assert (tmp_path / "last.pt").read_bytes() == before
    again = train(_model(), x, y, cfg)                     # the same run resumes (here: already finished)
    assert [r["epoch"] for r in again.history] == [1, 2]


def test_early_stopping_keeps_the_best_epoch():
    x, y = _data()
    model = _model()
    result = train(model, x[:64], y[:64], TrainConfig(epochs=30, lr=5e-2, patience=2, progress=False),
                   val_x=x[64:], val_y=y[64:])
    vals = [r["val_accuracy"] for r in result.history]
    assert result.best_val_accuracy == max(vals)
    if result.stopped_early:
        assert len(vals) < 30 and vals.index(max(vals)) == len(vals) - 3


class _Recorder(nn.Module):
    """Remembers which rows (column 0 carries the row id) it saw in training and in evaluation."""

    def __init__(self):
        super().__init__()
        self.inner, self.trained_on, self.evaluated_on = _model(), set(), set()

    def forward(self, x):
        (self.trained_on if self.training else self.evaluated_on).update(x[:, 0].long().tolist())
        return self.inner(x[:, 1:])


def test_early_stopping_without_a_validation_set_holds_out_training_rows():
    x, y = _data()
    ids = torch.arange(len(y), dtype=torch.float32)[:, None]
    model = _Recorder()
    result = train(model, torch.cat([ids, x], 1), y,
                   TrainConfig(epochs=4, patience=2, val_fraction=0.25, seed=5, progress=False))
    held = model.evaluated_on
    assert held and not held & model.trained_on                         # never trained on
    assert held | model.trained_on == set(range(len(y)))
    for c in (0, 1):                                                    # stratified: 25% of each class
        in_class = int((y == c).sum())
        assert sum(int(y[i]) == c for i in held) == round(0.25 * in_class)
    assert all("val_accuracy" in r for r in result.history)
    again = _Recorder()
    train(again, torch.cat([ids, x], 1), y, TrainConfig(epochs=1, patience=2, val_fraction=0.25, seed=5,
                                                        progress=False))
    assert again.evaluated_on == held                                   # seeded by the config


def test_tune_never_hands_the_held_out_split_to_the_loop(monkeypatch):
    import importlib

    tune_module = importlib.import_module("zooforge.tuning.tune")    # the package re-exports the function
    seen = {}
    real = tune_module.train

    def spy(model, x, y, cfg, val_x=None, val_y=None):
        seen.update(n=len(y), val_x=val_x)
        return real(model, x, y, cfg, val_x=val_x, val_y=val_y)

    monkeypatch.setattr(tune_module, "train", spy)
    from zooforge.zoo import load_dataset

    ds = load_dataset("demo:shapes?n=12")
    r = tune_module.tune("demo/resnet-textures", ds, "linear", catalogue="demo",
                         loop=TrainConfig(epochs=2, patience=1, progress=False))
    assert seen["val_x"] is None and seen["n"] == len(ds.split(0.8, 0)[0])
    assert 0.0 <= r.accuracy <= 1.0 and "val_accuracy" in r.history[0]


def test_gradient_accumulation_matches_one_big_batch():
    x, y = _data()
    a, b = _model(), _model()
    a[2].p = b[2].p = 0.0                              # no dropout: the two must agree exactly in math
    train(a, x, y, TrainConfig(epochs=2, batch_size=32, grad_accum=1, progress=False))
    train(b, x, y, TrainConfig(epochs=2, batch_size=16, grad_accum=2, progress=False))
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_a_parameter_with_an_lr_scale_trains_at_that_multiple_of_the_rate():
    # Adam's first step moves every parameter by about its rate, whatever the gradient's size: two
    # copies of one bias, one at 10x, move 1x and 10x (no decay on biases); the rest trains as before.
    x, y = _data()
    plain, scaled = _model(), _model()
    plain[2].p = scaled[2].p = 0.0
    scaled[3].bias.lr_scale = 10.0
    start = plain[3].bias.detach().clone()
    cfg = TrainConfig(epochs=1, batch_size=96, warmup_frac=0.0, progress=False)        # one step
    train(plain, x, y, cfg)
    train(scaled, x, y, cfg)
    torch.testing.assert_close(scaled[3].bias - start, 10 * (plain[3].bias - start), rtol=1e-4, atol=1e-7)
    for p, q in zip(plain[0].parameters(), scaled[0].parameters()):   # before the scaled one in the graph
        torch.testing.assert_close(p, q)


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(lr=1.0, warmup_frac=0.1, min_lr_ratio=0.01)
    lrs = [learning_rate(s, 100, cfg) for s in range(100)]
    assert lrs[:10] == sorted(lrs[:10]) and lrs[9] == pytest.approx(1.0)
    assert lrs[10:] == sorted(lrs[10:], reverse=True) and lrs[-1] >= 0.01


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="`epochs`"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="no trainable parameters"):
        m = _model().requires_grad_(False)
        train(m, *_data(), TrainConfig(epochs=1, progress=False))


@pytest.mark.parametrize("kwargs, message", [
    ({"lr": float("nan")}, r"`lr` must be a finite number > 0; got nan"),     # NaN <= 0 is false: it used to pass
    ({"lr": float("inf")}, r"`lr` must be a finite number > 0; got inf"),
    ({"lr": 0.0}, r"`lr` must be a finite number > 0; got 0.0"),
    ({"weight_decay": float("nan")}, r"`weight_decay` must be a finite number >= 0; got nan"),
    ({"label_smoothing": 1.0}, r"`label_smoothing` must be in \[0, 1\); got 1.0"),
])
def test_train_config_refuses_rates_that_would_train_to_nan(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


class _GoesNaN(nn.Module):
    """Its training outputs are NaN from training forward call number ``at`` on (``once``: at that call
    only): a run that diverges."""

    def __init__(self, inner, at, once=False):
        super().__init__()
        self.inner, self.at, self.once, self.calls = inner, at, once, 0

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls == self.at or (self.calls > self.at and not self.once):
                return out * float("nan")
        return out


def test_a_loss_that_stops_being_finite_ends_training_and_is_no_result():
    """lr 1e8 used to train to NaN and `tune` printed the NaN model's chance accuracy, exit 0."""
    from zooforge.errors import ZooforgeError
    from zooforge.tuning.loop import TrainingDiverged

    x, y = _data()
    model = _GoesNaN(_model(), at=5)                   # 96 rows in batches of 32: step 5 is epoch 2's second
    r = train(model, x, y, TrainConfig(epochs=4, batch_size=32, lr=1e-2, progress=False))
    assert r.diverged.startswith("the training loss became nan at epoch 2, step 5 of 12 (peak learning rate 0.01), and the weights followed")
    assert len(r.history) == 2 and model.calls == 5    # no step after the one whose loss was NaN
    with pytest.raises(TrainingDiverged, match="fine-tuning m diverged: the training loss became nan") as e:
        r.check("fine-tuning m")
    assert isinstance(e.value, ZooforgeError)          # a command's error: exit 1, named
    # early stopping that restores an epoch before the loss went bad returns a model that is a result
    model = _GoesNaN(_model(), at=5)
    kept = train(model, x, y, TrainConfig(epochs=4, batch_size=32, lr=1e-2, progress=False, patience=2))
    assert kept.diverged is None and kept.check() is kept
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_tune_says_a_diverged_run_and_its_rate_trials_lose(tmp_path):
    from typer.testing import CliRunner

    from zooforge.cli import app

    args = ["tune", "demo/effnet-glyphs", "demo:glyphs?n=6", "--catalogue", "demo", "--method", "full", "--epochs", "2"]
    out = CliRunner().invoke(app, args + ["--lr", "1e9"])
    assert out.exit_code == 1 and "diverged: the training loss became nan" in " ".join(out.output.split())
    out = CliRunner().invoke(app, args + ["--lr", "auto", "--lr-grid", "1e9", "--lr-grid", "1e-3"])
    assert out.exit_code == 0, out.output
    assert "1e+09 diverged" in out.output and "chose 0.001" in out.output


def test_a_non_finite_loss_whose_step_is_skipped_is_not_divergence(monkeypatch):
    """Under fp16 autocast a batch can overflow; the gradient scaler then skips its step and the weights
    stay finite. A scaler that does what torch's does on CUDA stands in for it here."""
    class SkippingScaler:
        def __init__(self, enabled=True):
            pass

        def scale(self, loss):
            return loss

        def step(self, optimizer):
            grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            if all(bool(torch.isfinite(g).all()) for g in grads):
                optimizer.step()

        def update(self):
            pass

    monkeypatch.setattr(torch.amp, "GradScaler", SkippingScaler)
    x, y = _data()
    model = _GoesNaN(_model(), at=5, once=True)
    r = train(model, x, y, TrainConfig(epochs=4, batch_size=32, lr=1e-2, progress=False))
    assert r.diverged is None and len(r.history) == 4 and model.calls == 12
    assert all(torch.isfinite(p).all() for p in model.parameters())
