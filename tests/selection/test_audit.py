"""Audits: resumable after kill -9, failing cells recorded, Ray backend equal to local, plan checks."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from html import unescape
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from zooforge.errors import ZooforgeError
from zooforge.selection.audit import SCHEMA_VERSION, TIMING_COLUMNS, audit_tables, load_plan, read_audit, run_audit

MODELS = ["demo/effnet-*", "demo/resnet-textures", "demo/resnet-random"]     # 5 models
DATASETS = ["demo:shapes?n=12", "demo:textures?n=12", "demo:counting?n=10"]


def _plan(tmp_path, name="plan.toml", *, models=MODELS, datasets=DATASETS, extra=""):
    text = (f'catalogues = ["demo"]\nmodels = {models!r}\ndatasets = {datasets!r}\n'
            f'metrics = ["logme", "leep", "nce", "hscore_shrink"]\nout = "{name}.parquet"\nbootstrap = 4\n' + extra)
    path = tmp_path / name
    path.write_text(text.replace("'", '"'))
    return path


def _stable(table: pl.DataFrame) -> pl.DataFrame:
    return table.drop(TIMING_COLUMNS)


def test_audit_survives_kill_9_and_resumes_to_the_same_table(tmp_path):
    plan = _plan(tmp_path, "killed.toml")
    total = 5 * len(DATASETS)
    out = tmp_path / "killed.toml.parquet"
    env = os.environ | {"ZOOFORGE_CACHE_DIR": str(tmp_path / "cache-killed")}
    cmd = [sys.executable, "-m", "zooforge.cli", "audit", str(plan)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(out.glob("cell-*.parquet"))) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = len(list(out.glob("cell-*.parquet")))
    assert 2 <= done_at_kill < total, f"the kill missed the middle of the audit ({done_at_kill}/{total} cells)"

    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{total - done_at_kill} run now, {done_at_kill} already finished" in " ".join(resumed.stdout.split())
    assert not list(out.glob(".*"))                            # the killed run's temporary files are gone

    fresh = run_audit(load_plan(plan, out=str(tmp_path / "fresh.parquet")), progress=False)
    assert fresh.ran == total and not fresh.failed
    assert_frame_equal(_stable(read_audit(out)), _stable(fresh.table))
    assert fresh.table.height == total * 4                     # one row per (model, dataset, metric)


def test_failing_cells_are_recorded_and_retried(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[model]]\nid = "bad/missing"\nsource = "local"\nname = "test_resnet"\ncheckpoint = "gone.safetensors"\n')
    plan = tmp_path / "plan.toml"
    plan.write_text('catalogues = ["demo", "bad.toml"]\nmodels = ["demo/effnet-shapes", "bad/*"]\n'
                    'datasets = ["demo:shapes?n=8", "no/such/folder"]\nmetrics = ["logme", "leep"]\n')
    first = run_audit(plan, progress=False)
    assert first.cells == 4 and first.ran == 4
    assert sorted((m, d) for m, d, _ in first.failed) == [
        ("bad/missing", "demo:shapes?n=8"), ("bad/missing", "no/such/folder"), ("demo/effnet-shapes", "no/such/folder")]
    table = first.table
    ok = table.filter((pl.col("model") == "demo/effnet-shapes") & (pl.col("dataset") == "demo:shapes?n=8"))
    assert ok["status"].to_list() == ["ok", "ok"] and ok["score"].is_not_null().all()
    broken = table.filter(pl.col("model") == "bad/missing")
    assert broken["status"].unique().to_list() == ["error"]
    assert all("gone.safetensors" in r for r in broken["reason"])
    missing = table.filter((pl.col("model") == "demo/effnet-shapes") & (pl.col("dataset") == "no/such/folder"))
    assert "not found" in missing["reason"][0]
    # reruns: failed cells are retried by default, kept with retry_failed=False
    assert run_audit(plan, progress=False, retry_failed=False).ran == 0
    assert run_audit(plan, progress=False).ran == 3
    # the per-dataset ranking still ranks what worked and carries the error of what did not
    tables = audit_tables(table)
    shapes = tables["demo:shapes?n=8"]
    assert shapes["model"][0] == "demo/effnet-shapes" and shapes["rank"][0] == 1
    assert "BackboneLoadError" in shapes.filter(pl.col("model") == "bad/missing")["error"][0]


def test_changed_settings_do_not_reuse_cells(tmp_path):
    plan = _plan(tmp_path, models=["demo/effnet-shapes"], datasets=["demo:shapes?n=8"])
    assert run_audit(plan, progress=False).ran == 1
    assert run_audit(plan, progress=False).ran == 0
    plan.write_text(plan.read_text().replace("bootstrap = 4", "bootstrap = 6"))
    again = run_audit(plan, progress=False)
    assert again.ran == 1 and again.table.height == 4         # only the current settings' cells are read
    latest = read_audit(again.out)                            # one generation by default: no repeated keys
    assert latest.height == 4 and latest.select("model", "dataset", "metric").is_unique().all()
    both = read_audit(again.out, generation="all")            # the earlier cell stays on disk, on request
    assert both.height == 8 and both["settings"].n_unique() == 2
    from zooforge.selection.report import audit_report

    text = audit_report(again.out, tmp_path / "r.md").read_text()
    assert "1 cell(s), 4 estimator score(s)" in text          # ... and the report shows the last plan's
    assert "1 part(s) of earlier plans" in text and "left out" in text


def test_an_edited_entry_or_changed_dataset_content_is_not_reused(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, images=rng.integers(0, 255, (16, 32, 32, 3), dtype=np.uint8), labels=np.arange(16) % 2)
    zoo = tmp_path / "zoo.toml"
    entry = ('[[model]]\nid = "tiny"\nsource = "timm"\nname = "test_efficientnet"\npretrained = false\n'
             'num_classes = 10\ninput_size = [3, 32, 32]\ncrop_pct = {crop}\n')
    zoo.write_text(entry.format(crop=1.0))
    plan = tmp_path / "p.toml"
    plan.write_text('catalogues = ["zoo.toml"]\ndatasets = ["d.npz"]\nmetrics = ["logme"]\nout = "a"\n')
    first = run_audit(plan, progress=False)
    assert first.ran == 1 and run_audit(plan, progress=False).ran == 0
    zoo.write_text(entry.format(crop=0.5))                    # other preprocessing: another result
    edited = run_audit(plan, progress=False)
    assert edited.ran == 1 and edited.table["score"][0] != first.table["score"][0]
    np.savez(data, images=rng.integers(0, 255, (16, 32, 32, 3), dtype=np.uint8), labels=np.arange(16) % 2)
    changed = run_audit(plan, progress=False)                 # same spec, other images: the part is stale
    assert changed.ran == 1 and changed.stale == 1
    assert changed.table["dataset_fingerprint"][0] != edited.table["dataset_fingerprint"][0]


def test_ray_backend_gives_the_local_table(tmp_path):
    pytest.importorskip("ray")
    models, datasets = ["demo/effnet-shapes", "demo/resnet-textures"], ["demo:shapes?n=8", "demo:textures?n=8"]
    local = run_audit(_plan(tmp_path, "local.toml", models=models, datasets=datasets), progress=False)
    ray_run = run_audit(_plan(tmp_path, "ray.toml", models=models, datasets=datasets), backend="ray", workers=2,
                        progress=False)
    assert ray_run.ran == 4 and not ray_run.failed
    assert_frame_equal(_stable(local.table), _stable(ray_run.table))


def test_a_two_node_loopback_ray_cluster_gives_the_local_table(tmp_path):
    # Issue #18: the multi-node path (`ray start --head` and a second `ray start --address`), on loopback.
    pytest.importorskip("ray")
    from zooforge.selection.audit_ray import loopback_cluster

    models, datasets = ["demo/effnet-shapes", "demo/resnet-textures"], ["demo:shapes?n=8", "demo:textures?n=8"]
    local = run_audit(_plan(tmp_path, "local.toml", models=models, datasets=datasets), progress=False)
    with loopback_cluster(nodes=2, cpus_per_node=1) as address:
        import ray

        ray.init(address=address, log_to_driver=False)
        assert sum(n["Alive"] for n in ray.nodes()) == 2 and ray.cluster_resources()["CPU"] == 2
        ray.shutdown()
        cluster = run_audit(_plan(tmp_path, "cluster.toml", models=models, datasets=datasets), backend="ray",
                            address=address, progress=False)
    assert cluster.ran == 4 and not cluster.failed
    assert_frame_equal(_stable(local.table), _stable(cluster.table))


def test_ray_cells_ask_for_a_gpu_only_where_there_is_one_to_use():
    from zooforge.errors import ZooforgeError
    from zooforge.selection.audit_ray import task_resources

    assert task_resources(None, 0) == {"num_cpus": 1, "num_gpus": 0}
    assert task_resources(None, 4) == {"num_cpus": 1, "num_gpus": 1}           # best available: the GPU
    assert task_resources("cpu", 4) == {"num_cpus": 1, "num_gpus": 0}
    assert task_resources("cuda:1", 2) == {"num_cpus": 1, "num_gpus": 1}
    with pytest.raises(ZooforgeError, match="has no GPU"):
        task_resources("cuda", 0)


def test_plan_validation(tmp_path):
    def plan(text):
        p = tmp_path / "p.toml"
        p.write_text(text)
        return p

    with pytest.raises(ZooforgeError, match=r"unknown key\(s\) \['dataset'\]"):
        load_plan(plan('catalogues = ["demo"]\ndataset = ["demo:shapes"]\n'))
    with pytest.raises(ZooforgeError, match="`datasets` must be a non-empty list"):
        load_plan(plan('catalogues = ["demo"]\ndatasets = []\n'))
    with pytest.raises(ValueError, match="unknown estimator 'logmee'"):
        load_plan(plan('catalogues = ["demo"]\ndatasets = ["demo:shapes"]\nmetrics = ["logmee"]\n'))
    with pytest.raises(ZooforgeError, match="`bootstrap` must be an integer >= 0"):
        load_plan(plan('catalogues = ["demo"]\ndatasets = ["demo:shapes"]\nbootstrap = -1\n'))
    with pytest.raises(ZooforgeError, match="selects no models"):
        run_audit(plan('catalogues = ["demo"]\nmodels = ["zzz*"]\ndatasets = ["demo:shapes"]\n'), progress=False)
    with pytest.raises(ZooforgeError, match="in both demo and demo"):
        run_audit(plan('catalogues = ["demo", "demo"]\ndatasets = ["demo:shapes"]\n'), progress=False)
    with pytest.raises(ZooforgeError, match="unknown backend 'spark'"):
        run_audit(plan('catalogues = ["demo"]\ndatasets = ["demo:shapes"]\n'), backend="spark")
    with pytest.raises(ZooforgeError, match="not found"):
        load_plan(tmp_path / "none.toml")
    default = load_plan(plan('catalogues = ["demo"]\ndatasets = ["demo:shapes", "data/x"]\n'))
    assert default.out == tmp_path / "p.parquet" and default.resolve_dataset("data/x") == str(tmp_path / "data/x")
    assert "logme" in default.metrics and "otce_self" in default.metrics    # default: every estimator


def test_reports_carry_tables_plots_and_provenance(tmp_path):
    from zooforge.selection import rank
    from zooforge.selection.report import audit_report, ranking_report

    summary = run_audit(_plan(tmp_path, models=["demo/effnet-*"], datasets=["demo:shapes?n=8"]), progress=False)
    html = unescape(audit_report(summary.out, tmp_path / "audit.html").read_text())
    fingerprint = summary.table["dataset_fingerprint"][0]
    for needle in ("demo/effnet-glyphs", "Ranking on demo:shapes?n=8", fingerprint, "torch", "timm",
                   "data:image/png;base64,", '"bootstrap": 4', "hscore_shrink"):
        assert needle in html, needle
    md = audit_report(summary.out, tmp_path / "audit.md")
    assert (tmp_path / "audit_files" / "dataset-0.png").read_bytes()[:4] == b"\x89PNG"
    assert "](audit_files/dataset-0.png)" in md.read_text()

    table = rank("demo", "demo:shapes?n=8", ["logme"], models=["demo/effnet-*"], bootstrap=5, progress=False)
    text = ranking_report(table, tmp_path / "rank.html", settings={"bootstrap": 5}).read_text()
    assert table["dataset_fingerprint"][0] in text and "logme 90%" in text and "<img" in text
    with pytest.raises(ZooforgeError, match="use .html or .md"):
        ranking_report(table, tmp_path / "rank.pdf")


def test_the_audit_folder_reads_as_one_table(tmp_path):
    plan = _plan(tmp_path, models=["demo/effnet-shapes", "demo/effnet-glyphs"], datasets=["demo:shapes?n=6"])
    summary = run_audit(plan, progress=False)
    whole = pl.read_parquet(summary.out)                      # what the README shows: nothing but Parquet inside
    assert_frame_equal(_stable(whole.sort("dataset", "model", "metric")), _stable(summary.table))
    assert whole["schema_version"].unique().to_list() == [SCHEMA_VERSION] == [3]
    provenance = summary.out.with_name(summary.out.name + ".plan.json")
    assert provenance.is_file() and not (summary.out / "plan.json").exists()
    from zooforge.selection.audit import read_provenance

    assert read_provenance(summary.out)["settings_digest"] == summary.table["settings"][0]


def test_an_audit_of_a_regression_dataset_orders_by_the_estimators_that_score_it(tmp_path):
    plan = _plan(tmp_path, models=["demo/effnet-shapes", "demo/effnet-glyphs"], datasets=["demo:size?n=30"])
    summary = run_audit(plan, progress=False)
    assert set(summary.table["target_kind"]) == {"regression"}
    skipped = summary.table.filter(pl.col("metric") == "leep")
    assert set(skipped["status"]) == {"skipped"} and all("not regression" in r for r in skipped["reason"])
    ranking = audit_tables(summary.table)["demo:size?n=30"]
    assert set(ranking["ordering"]) == {"logme"}            # of the plan's four, the one with a regression form
    assert ranking["missing_scores"].to_list() == [0, 0]


def test_a_redefined_estimator_changes_the_cells_it_scores_and_no_other():
    """A cell stored before an estimator changed definition is not reused after it: the version of
    every estimator past its first definition is part of the settings digest (the linear probe's 5
    fold draws are version 2, and 3 for multi-label too), while plans of unchanged estimators keep their
    old digests."""
    from zooforge.metrics import REGISTRY
    from zooforge.selection.audit import Plan

    probe = Plan(catalogues=("demo",), datasets=("demo:shapes",), metrics=("logme", "linear_probe"), out=Path("a"))
    assert REGISTRY["linear_probe"].version == 3
    assert probe.settings()["estimator_versions"] == {"linear_probe": 3}
    closed_form = Plan(catalogues=("demo",), datasets=("demo:shapes",), metrics=("logme",), out=Path("a"))
    assert "estimator_versions" not in closed_form.settings()
    assert closed_form.digest == hashlib.sha256(json.dumps(
        {"metrics": ["logme"], "max_per_class": None, "bootstrap": 0, "seed": 0}, sort_keys=True).encode()).hexdigest()[:16]
