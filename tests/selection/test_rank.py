import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from zooforge.cli import app
from zooforge.errors import ZooforgeError
from zooforge.selection import evaluate, rank
from zooforge.selection.rank import pareto_front


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return rank("demo", "demo:textures?n=15", ["logme", "leep", "nce"],
                models=["demo/resnet-*", "demo/effnet-textures", "demo/vit-glyphs"],
                bootstrap=20, cache_dir=cache, budget_gmacs=0.003, progress=False)


def test_rank_table_contents(table):
    assert table.height == 5 and table["rank"].to_list() == [1, 2, 3, 4, 5]   # 3 resnets + 2
    for m in ("logme", "leep", "nce"):
        assert {f"{m}_rank", f"{m}_lo", f"{m}_hi", f"{m}_p_top1"} <= set(table.columns)
    # the random model has no head: LEEP/NCE skipped with the reason, not a crash
    random = table.filter(pl.col("model") == "demo/resnet-random").row(0, named=True)
    assert random["leep"] is None and "needs source_probs" in random["skipped"]
    # a model missing a score never outranks one that has them all: the headless random model ranks
    # last although its LogME alone would give it mean rank 2; within equal coverage, by mean rank
    assert table["model"][-1] == "demo/resnet-random" and random["missing_scores"] == 2
    assert table["missing_scores"].is_sorted()
    for _, part in table.group_by("missing_scores"):
        assert part.sort("rank")["mean_rank"].is_sorted()
    p = table["logme_p_top1"].to_numpy()
    assert p.sum() == pytest.approx(1.0)                   # exactly one winner per resample
    # budget: resnets cost 0.0041 GMACs, so the best within 0.003 is not a resnet
    best = table.filter(pl.col("best_within_budget"))["model"].to_list()
    assert len(best) == 1 and not best[0].startswith("demo/resnet")
    # a textures-pretrained model should beat the glyph ViT on a textures target
    scores = dict(zip(table["model"], table["logme"]))
    assert scores["demo/effnet-textures"] > scores["demo/vit-glyphs"]


def test_evaluate_against_truth(table):
    truth = {m: float(s) for m, s in zip(table["model"], table["logme"])}   # LogME is the truth here
    result = evaluate(table, truth).filter(pl.col("metric") == "logme").row(0, named=True)
    assert result["kendall_tau"] == pytest.approx(1.0) and result["weighted_tau"] == pytest.approx(1.0)
    assert result["top1_regret"] == 0.0 and result["top3_hit"]
    with pytest.raises(ZooforgeError, match="not in the ranking: ghost"):
        evaluate(table, {"ghost": 0.5, **truth})
    # the order a user acts on is judged first, over every model (one missing scores included)
    first = evaluate(table, truth).row(0, named=True)
    assert first["metric"] == "ordering" and first["n_models"] == table.height


def test_pareto_front():
    score = np.array([1.0, 2.0, 1.5, 0.5])
    gmacs = np.array([1.0, 3.0, 3.0, 0.5])
    assert pareto_front(score, gmacs).tolist() == [True, True, False, True]


def test_rank_bad_input():
    with pytest.raises(ValueError, match="unknown estimator 'logmee'"):
        rank("demo", "demo:shapes?n=3", ["logmee"])
    with pytest.raises(ZooforgeError, match=r"no models matching \['nothing\*'\]"):
        rank("demo", "demo:shapes?n=3", models=["nothing*"])


def test_cli_rank_models_and_errors(tmp_path):
    runner = CliRunner()
    out = tmp_path / "r.csv"
    result = runner.invoke(app, ["rank", "demo", "demo:shapes?n=8", "-m", "logme", "--model", "demo/effnet-*",
                                 "--bootstrap", "5", "--out", str(out), "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and out.is_file()
    assert sorted(pl.read_csv(out)["model"]) == ["demo/effnet-glyphs", "demo/effnet-shapes", "demo/effnet-textures"]
    bad = runner.invoke(app, ["rank", "demo", "demo:shapes", "-m", "nope"])
    assert bad.exit_code == 1 and "unknown estimator 'nope'" in bad.output
    missing = runner.invoke(app, ["models", str(tmp_path / "none.toml")])
    assert missing.exit_code == 1 and "not found" in missing.output
    listed = runner.invoke(app, ["models", "demo"])
    assert listed.exit_code == 0 and "demo/vit-glyphs" in listed.output


def test_plot_writes_an_image_with_the_front(table, tmp_path):
    from zooforge.selection.plot import plot_ranking

    out = plot_ranking(table, tmp_path / "r.png", "logme", budget_gmacs=0.002)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5_000
    with pytest.raises(ZooforgeError, match="no column 'nope'"):
        plot_ranking(table, tmp_path / "x.png", "nope")


def test_delete_d_calibration_recovers_the_full_sample_spread():
    """For the sample mean, subsamples of 80% spread sqrt(1/m - 1/n): half the full mean's standard
    error. Calibrated, they must spread like the full-sample mean (sigma / sqrt(n)) and centre on it."""
    from zooforge.selection.intervals import bootstrap_indices, delete_d_calibrate

    rng = np.random.default_rng(0)
    x = rng.normal(size=4000)
    labels = np.zeros(4000, dtype=int)
    idx = bootstrap_indices(labels, 400, 0)
    raw = np.array([x[i].mean() for i in idx])
    assert raw.std() == pytest.approx(np.sqrt(1 / 3200 - 1 / 4000), rel=0.15)
    cal = delete_d_calibrate(raw, float(x.mean()), idx.shape[1], len(x))
    assert cal.std() == pytest.approx(1 / np.sqrt(4000), rel=0.15)
    assert cal.mean() == pytest.approx(x.mean(), abs=1e-12)
    # a size-dependent estimator (sum instead of mean) is re-centred on its full-data value
    raw_sum = np.array([x[i].sum() for i in idx]) + 100.0
    assert delete_d_calibrate(raw_sum, 7.0, idx.shape[1], len(x)).mean() == pytest.approx(7.0)


def test_rank_intervals_contain_their_point_estimates(table):
    for m in ("logme", "leep", "nce"):
        rows = table.filter(pl.col(m).is_not_null())
        assert (rows[f"{m}_lo"] <= rows[m]).all() and (rows[m] <= rows[f"{m}_hi"]).all(), m


def test_failures_are_described_by_type_and_first_line_even_without_a_message():
    from zooforge.errors import describe, first_line

    assert describe(RuntimeError("CUDA out of memory\nTried to allocate 2 GiB")) == "RuntimeError: CUDA out of memory"
    assert describe(RuntimeError()) == "RuntimeError: "
    assert first_line(ValueError("")) == ""


def test_a_model_missing_a_score_is_never_starred_and_every_gap_has_a_reason():
    # Issue #17's reproducer: with 2 samples per class some estimators cannot score every model;
    # a model whose score is missing must not get the star, and each missing score says why.
    from zooforge.selection.rank import finish_table

    table = pl.DataFrame({"model": ["a", "b", "c"], "params_m": [1.0, 1.0, 1.0], "gmacs": [1.0, 1.0, 1.0],
                          "samples_per_s": [None] * 3, "error": [None, None, "RuntimeError: boom"],
                          "skipped": ["logme: returned nan (not a finite score)", None, None],
                          "logme": [None, -1.0, None], "hscore": [9.0, 1.0, None]},
                         schema_overrides={"samples_per_s": pl.Float64, "logme": pl.Float64})
    ranked = finish_table(table, ["logme", "hscore"], {}, False, None, None)
    assert ranked["model"].to_list() == ["b", "a", "c"]                   # a's hscore is higher, but it lacks LogME
    assert ranked.filter(pl.col("best_within_budget"))["model"].to_list() == ["b"]
    assert ranked["missing_scores"].to_list() == [0, 1, 2]


def test_non_finite_scores_become_missing_with_the_reason():
    from zooforge.selection.rank import score_featureset

    class FS:
        labels = np.array([0, 0, 1, 1])

        def inputs(self):
            return {"features": np.eye(4)}

    from zooforge.metrics import registry

    registry.register("always_nan_for_test", needs=("features",), summary="test")(lambda features, labels: float("nan"))
    try:
        out = score_featureset(FS(), ["always_nan_for_test"])["always_nan_for_test"]
    finally:
        registry._REGISTRY.pop("always_nan_for_test")
    assert out["score"] is None and "returned nan (not a finite score) on 4 samples, smallest class 2" in out["skipped"]


def test_cli_rank_exits_3_when_a_model_fails_and_summarises_the_data(tmp_path):
    zoo = tmp_path / "zoo.toml"
    zoo.write_text('[[model]]\nid = "ok"\nsource = "timm"\nname = "test_efficientnet"\npretrained = false\n'
                   'input_size = [3, 32, 32]\n\n[[model]]\nid = "broken"\nsource = "local"\nname = "x"\n'
                   'checkpoint = "missing.safetensors"\n')
    runner = CliRunner()
    args = ["rank", str(zoo), "demo:shapes?n=6", "-m", "logme", "--bootstrap", "0", "--cache-dir", str(tmp_path / "c")]
    failed = runner.invoke(app, args)
    assert failed.exit_code == 3, failed.output
    text = " ".join(failed.output.split())
    assert "dataset demo:shapes: 24 images, 4 classes (6-6 per class)" in text.replace("demo:shapes?n=6", "demo:shapes")
    assert "1 of 2 model(s) failed" in text and "--allow-failures" in text
    assert "ok *" in text and "broken *" not in text
    allowed = runner.invoke(app, [*args, "--allow-failures"])
    assert allowed.exit_code == 0, allowed.output


@pytest.mark.parametrize("option,value,message", [
    ("--out", "x.xlsx", "unsupported file type '.xlsx'"), ("--out", "-", "standard output is not supported"),
    ("--report", "x.pdf", "unsupported file type '.pdf'"), ("--device", "cuda:0", "use --device cpu"),
    ("--out", "/proc/zooforge/x.csv", "cannot write in /proc")])
def test_cli_rank_refuses_bad_outputs_and_devices_before_the_work(option, value, message):
    if option == "--device":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    result = CliRunner().invoke(app, ["rank", "demo", "demo:shapes?n=4", "-m", "logme", option, value])
    assert result.exit_code == 1 and message in " ".join(result.output.split()), result.output
    assert "dataset" not in result.output                                   # refused before loading anything


def test_errors_from_dataloader_workers_keep_the_file_name():
    from zooforge.errors import DatasetError, describe

    wrapped = DatasetError("Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                           "call last):\n  File \"x.py\", line 1, in f\nzooforge.errors.DatasetError: cannot read "
                           "image /data/cat/7.png: truncated\n")
    assert describe(wrapped) == "DatasetError: cannot read image /data/cat/7.png: truncated"


def test_the_default_table_fits_80_columns_without_cut_scores_or_blank_lines(tmp_path):
    result = CliRunner().invoke(app, ["rank", "demo", "demo:shapes?n=6", "--model", "demo/*-random",
                                      "--model", "demo/convnext-orientation", "--bootstrap", "5",
                                      "--cache-dir", str(tmp_path)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    table = [line for line in lines if line.lstrip()[:1].isdigit()]
    assert len(table) == 3 and all(len(line) <= 80 for line in table)
    assert all("…" not in line.split("demo/")[1].split()[1:] for line in table)   # only a model name may be cut
    assert "\n\n\n" not in result.output                                          # no finished progress bars


def test_cli_json_version_and_messages_instead_of_tracebacks(tmp_path):
    import json

    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.startswith("zooforge ")
    as_json = runner.invoke(app, ["rank", "demo", "demo:shapes?n=4", "-m", "logme", "--bootstrap", "0", "--json",
                                  "--model", "demo/effnet-*", "--cache-dir", str(tmp_path / "c")])
    assert as_json.exit_code == 0
    rows = json.loads(as_json.stdout)
    assert [r["rank"] for r in rows] == [1, 2, 3] and all("logme" in r for r in rows)
    after = runner.invoke(app, ["rank", "demo", "demo:shapes?n=4", "-m", "logme", "--bootstrap", "0",
                                "--model", "demo/effnet-shapes", "--cache-dir", str(tmp_path / "c")])
    assert "demo/effnet-shapes" in after.stdout                          # the console is back on stdout
    ranking, truth = tmp_path / "r.csv", tmp_path / "t.csv"
    ranking.write_text("name,score\na,1\n")
    truth.write_text("model,accuracy\na,0.5\n")
    cases = [
        (["evaluate", str(ranking), str(truth)], "no `model` column"),
        (["evaluate", str(truth), str(truth)], "no estimator columns"),
        (["report", str(truth), str(tmp_path / "x.md")], "not a ranking"),
    ]
    bad_truth = tmp_path / "bad.csv"
    bad_truth.write_text("model,accuracy\na,high\n")
    good = tmp_path / "good.csv"
    good.write_text("model,logme,logme_rank\na,1.0,1\nb,0.5,2\n")
    cases.append((["evaluate", str(good), str(bad_truth)], "must be a finite number for every model; got ['high']"))
    for i, value in enumerate(["nan", "inf", ""]):     # inf went into the taus; nan or empty got a message naming nothing
        gap = tmp_path / f"gap{i}.csv"
        gap.write_text(f"model,accuracy\na,{value}\nb,0.7\n")
        cases.append((["evaluate", str(good), str(gap)], f"got [{value or 'empty'!r}] for model(s) ['a']"))
    plan = tmp_path / "p.toml"
    plan.write_text('catalogues = ["demo"]\ndatasets = ["demo:shapes?n=4"]\nmetrics = ["logmee"]\n')
    cases.append((["audit", str(plan)], "unknown estimator 'logmee'"))
    plan2 = tmp_path / "p2.toml"
    plan2.write_text('catalogues = ["demo"]\nmodels = ["demo/effnet-shapes"]\ndatasets = ["demo:shapes?n=4"]\n'
                     'metrics = ["logme"]\n')
    cases.append((["audit", str(plan2), "--backend", "ray", "--address", "127.0.0.1:1"], "nothing answers at 127.0.0.1:1"))
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and message in " ".join(result.output.split()), (args, result.output)
        assert "Traceback" not in result.output


def test_files_left_out_by_skip_bad_files_are_in_the_table_and_the_report(tmp_path):
    # Issue #17: --skip-bad-files must be reported in the table and the report, not only printed.
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "data" / c / f"{i}.png")
    (tmp_path / "data" / "dog" / "broken.png").write_bytes(b"not a png")
    args = ["rank", "demo", str(tmp_path / "data"), "-m", "logme", "--model", "demo/effnet-shapes", "--bootstrap", "0",
            "--out", str(tmp_path / "r.csv"), "--report", str(tmp_path / "r.md"), "--cache-dir", str(tmp_path / "c")]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 1 and "broken.png" in refused.output and "--skip-bad-files" in refused.output
    result = CliRunner().invoke(app, args + ["--skip-bad-files"])
    assert result.exit_code == 0, result.output
    table = pl.read_csv(tmp_path / "r.csv")
    assert table["skipped_files"].to_list() == [1]
    assert "1 unreadable image file(s) were left out" in (tmp_path / "r.md").read_text()
    clean = rank("demo", "demo:shapes?n=4", ["logme"], models=["demo/effnet-shapes"], bootstrap=0,
                 cache_dir=tmp_path / "c", progress=False)
    assert clean["skipped_files"].to_list() == [0]


def test_scoring_and_resampling_advance_a_progress_bar_to_its_total(monkeypatch):
    """One step per point score and one per re-scored subsample; a skipped estimator's steps are
    counted too, so the bar ends full; the label names the estimator at work."""
    import rich.console

    from zooforge.selection.intervals import resamples
    from zooforge.selection.scoring import score_featureset
    from zooforge.zoo import features

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)

    class FS:
        def inputs(self):
            return {"features": rng.standard_normal((30, 6)) + labels[:, None], "source_probs": None}

    FS.labels = labels
    seen = []

    class Recorder(features.progress_bar):
        def __enter__(self):
            seen.append({"total": self.total, "done": 0, "labels": []})

            def advance(n, description=None):
                seen[-1]["done"] += n
                seen[-1]["labels"] += [description] if description else []
            return advance

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(features, "progress_bar", Recorder)
    draws = resamples(labels, 7, 0)
    out = score_featureset(FS(), ["logme", "hscore_shrink", "leep"], resamples=draws, progress=True,
                           description="score m")
    assert out["leep"]["skipped"] and out["hscore_shrink"]["samples"].shape == (7,)
    # logme: 1 (its draws come from the influence), hscore_shrink: 1 + 7 re-scored subsamples, leep: 1 (skipped)
    assert seen == [{"total": 10, "done": 10, "labels": ["score m: logme", "score m: hscore_shrink", "score m: leep"]}]
    score_featureset(FS(), ["hscore_shrink"], resamples=draws, resample=["logme"], progress=True)
    assert seen[-1]["total"] == seen[-1]["done"] == 1              # not asked to re-score: no steps for it

    monkeypatch.setattr(features, "progress_bar", Recorder.__mro__[1])
    monkeypatch.setattr(rich.console.Console, "is_terminal", property(lambda self: True))
    live = score_featureset(FS(), ["logme", "hscore_shrink"], resamples=draws, progress=True)   # the real bar runs
    assert live["hscore_shrink"]["samples"].shape == (7,)


def test_one_shot_data_gets_no_intervals_and_says_why(tmp_path):
    """Resampling within a class cannot vary a class of one image: on one-shot data every draw was the
    data itself, and the table showed zero-width intervals and P(top-1) = 1 for the first model."""
    from zooforge.selection.intervals import IntervalWarning

    with pytest.warns(IntervalWarning, match="every class has a single sample"):
        table = rank("demo", "demo:shapes?n=1", ["logme"], models=["demo/effnet-*"], cache_dir=tmp_path)
    assert table["logme"].is_not_null().all()                                    # the scores stand
    assert not {"logme_lo", "logme_hi", "p_top1"} & set(table.columns)          # no interval claimed: as --bootstrap 0
    out = CliRunner().invoke(app, ["rank", "demo", "demo:shapes?n=1", "-m", "logme", "--model", "demo/effnet-*",
                                   "--cache-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "every class has a single sample" in " ".join(out.output.split()) and "IntervalWarning" not in out.output


def test_resampling_varies_every_class_it_can_and_says_which_it_holds_fixed():
    from zooforge.selection.intervals import bootstrap_indices, interval_note, resamples

    labels = np.repeat(np.arange(4), [1, 2, 3, 4])
    idx = bootstrap_indices(labels, 200, 0)
    kept = {c: {tuple(sorted(set(row) & set(np.flatnonzero(labels == c)))) for row in idx} for c in range(4)}
    assert len(kept[0]) == 1 and len(kept[1]) == 1          # a class of 1 or 2 is kept whole
    assert len(kept[2]) == 3 and len(kept[3]) == 4          # 3 and 4 leave one out (80% rounded up kept them whole)
    assert "hold fixed the 1 of 4 classes with a single sample" in interval_note(labels)
    assert interval_note(np.repeat(np.arange(3), 2)) is None
    assert resamples(np.arange(5), 10, 0) is None and "every class" in interval_note(np.arange(5))
    assert "bins of the target" in interval_note(np.array([0, 1, 1]), "regression")
    # where no class can leave a sample out, an estimator without an influence function gets no draws
    # (before: the full-data score every time, an interval of zero width)
    both = resamples(np.repeat(np.arange(3), 2), 10, 0)
    assert np.isnan(both.draw(1.0, None, lambda i: 1.0)).all()
    assert np.isfinite(both.draw(1.0, np.linspace(-1, 1, 6), None)).all()   # the influence still varies them
