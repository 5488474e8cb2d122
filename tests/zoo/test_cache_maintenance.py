"""The feature cache when it cannot be written, its file modes, and `zooforge cache info|clear|prune`."""

import os
import stat
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from zooforge.cli import app
from zooforge.selection import rank
from zooforge.zoo import cache as cache_module
from zooforge.zoo.cache import FeatureCache, atomic_write_bytes


@pytest.fixture(autouse=True)
def _fresh_warnings():
    cache_module._warned_unwritable.clear()


def test_an_unwritable_cache_scores_from_memory_with_one_warning(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="cannot be written") as caught:
        table = rank("demo", "demo:shapes?n=6", ["logme"], models=["demo/effnet-*"], bootstrap=0,
                     cache_dir=blocker / "cache", progress=False)
    assert table["error"].is_null().all() and table["logme"].is_not_null().all()
    assert sum("cannot be written" in str(w.message) for w in caught) == 1       # once, not per model


def test_a_failed_write_leaves_no_temporary_behind(tmp_path, monkeypatch):
    def full_disk(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(tmp_path / "x.bin", b"data" * 1000)
    assert list(tmp_path.iterdir()) == []
    cache = FeatureCache(tmp_path / "c")
    with pytest.warns(UserWarning, match="No space left on device"):
        assert cache.store("ab" * 32, {"features": np.zeros((3, 2), np.float32)}, {}) is False
    assert cache.info()["temporaries"] == 0 and cache.info()["entries"] == 0


def test_cache_entries_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        cache = FeatureCache(tmp_path / "c")
        key = "cd" * 32
        assert cache.store(key, {"features": np.ones((2, 2), np.float32)}, {})
        entry = cache._entry_dir(key)
        assert stat.S_IMODE(entry.stat().st_mode) == 0o755                 # not mkdtemp's 0700
        assert stat.S_IMODE((entry / "data.safetensors").stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_cache_info_prune_and_clear(tmp_path):
    root = tmp_path / "c"
    cache = FeatureCache(root)
    for i, key in enumerate(("11" * 32, "22" * 32, "33" * 32)):
        cache.store(key, {"features": np.zeros((100, 10), np.float32)}, {})
        then = time.time() - (30 - 10 * i) * 86400                          # 30, 20 and 10 days unused
        for p in [cache._entry_dir(key), *cache._entry_dir(key).iterdir()]:
            os.utime(p, (then, then))
    cache.store_shard("44" * 32, 0, {"features": np.zeros((5, 10), np.float32)})
    stale = root / "features" / "11" / ".left-by-a-crash"
    stale.write_bytes(b"x" * 100)
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh_tmp = root / "features" / "22" / ".being-written"
    fresh_tmp.write_bytes(b"y")
    runner = CliRunner()
    info = runner.invoke(app, ["cache", "info", "--cache-dir", str(root)])
    assert info.exit_code == 0 and "3 entries" in info.output and "1 unfinished extraction" in info.output
    assert "2 leftover temporary" in info.output
    pruned = runner.invoke(app, ["cache", "prune", "--cache-dir", str(root), "--older-than-days", "25"])
    assert pruned.exit_code == 0, pruned.output
    assert "removed 1 entries, 1 unfinished extraction(s) and 1 temporary file(s)" in pruned.output
    assert not stale.exists() and fresh_tmp.exists()                        # a write in flight is left alone
    kept = lambda key: cache._entry_dir(key).is_dir()     # noqa: E731 - a load would count as a use
    assert not kept("11" * 32) and kept("22" * 32) and kept("33" * 32)
    by_size = cache.prune(max_bytes=cache.info()["entry_bytes"] - 1)        # the least recently used goes
    assert by_size["entries"] == 1 and not kept("22" * 32) and cache.load("33" * 32) is not None
    assert runner.invoke(app, ["cache", "clear", "--cache-dir", str(root), "--yes"]).exit_code == 0
    assert cache.info()["entries"] == 0
