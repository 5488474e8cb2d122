"""Shared test set-up: few threads (the CI machine has 2 cores), an isolated feature cache."""

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ZOOFORGE_CACHE_DIR", str(tmp_path_factory.mktemp("zf-cache")))
