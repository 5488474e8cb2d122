"""Content-addressed, atomic, resumable on-disk store of extracted features.

Layout under the root (``$ZOOFORGE_CACHE_DIR``, default ``~/.cache/zooforge``)::

    features/<k[:2]>/<key>/data.safetensors   the arrays
    features/<k[:2]>/<key>/meta.json          provenance + sha256 of data.safetensors
    partial/<key>/shard-000003.safetensors    finished shards of an unfinished extraction (+ .sha256)

The key is the sha256 of everything that determines the result (model id and weights digest,
dataset fingerprint, transform, layers, library versions). Every file is written to a temporary name
and renamed into place, so a crash leaves either the old state or the new one, never half a file. A
corrupt or truncated entry fails its checksum on read; it is deleted and reported as a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FeatureCache", "default_cache_dir", "cache_key"]


def default_cache_dir() -> Path:
    return Path(os.environ.get("ZOOFORGE_CACHE_DIR") or Path.home() / ".cache" / "zooforge")


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _default_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_file_mode()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a synced temporary file and a rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, _FILE_MODE)                     # mkstemp's 0600 would hide results from other users
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save

    atomic_write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


class FeatureCache:
    """The store. All methods are safe to call from concurrent processes on the same root."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def _entry_dir(self, key: str) -> Path:
        return self.root / "features" / key[:2] / key

    def _partial_dir(self, key: str) -> Path:
        return self.root / "partial" / key

    # ---- complete entries ------------------------------------------------------------------------
    def load(self, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
        """(arrays, meta) of a verified entry, or None (missing, or corrupt and now removed)."""
        entry = self._entry_dir(key)
        data, meta_file = entry / "data.safetensors", entry / "meta.json"
        if not meta_file.is_file():
            return None
        try:
            meta = json.loads(meta_file.read_text())
            if _sha256(data) != meta["sha256"]:
                raise ValueError("checksum mismatch")
            return _load_arrays(data), meta
        except (OSError, ValueError, KeyError) as exc:
            warnings.warn(f"feature cache entry {key[:12]} is corrupt ({exc}); recomputing it.", stacklevel=2)
            shutil.rmtree(entry, ignore_errors=True)
            return None

    def store(self, key: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
        entry = self._entry_dir(key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{key[:12]}."))
        _save_arrays(tmp / "data.safetensors", arrays)
        meta = dict(meta, sha256=_sha256(tmp / "data.safetensors"), key=key)
        atomic_write_bytes(tmp / "meta.json", json.dumps(meta, indent=1, default=str).encode())
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
        shutil.rmtree(self._partial_dir(key), ignore_errors=True)

    # ---- shards of an unfinished extraction ------------------------------------------------------
    def load_shard(self, key: str, index: int) -> dict[str, np.ndarray] | None:
        path = self._partial_dir(key) / f"shard-{index:06d}.safetensors"
        digest = path.with_suffix(".sha256")
        if not (path.is_file() and digest.is_file()):
            return None
        try:
            if _sha256(path) != digest.read_text().strip():
                raise ValueError("checksum mismatch")
            return _load_arrays(path)
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            digest.unlink(missing_ok=True)
            return None

    def store_shard(self, key: str, index: int, arrays: dict[str, np.ndarray]) -> None:
        path = self._partial_dir(key) / f"shard-{index:06d}.safetensors"
        _save_arrays(path, arrays)
        # the checksum is written last: a shard without one is unfinished and is redone
        atomic_write_bytes(path.with_suffix(".sha256"), _sha256(path).encode())

    def clear(self) -> None:
        shutil.rmtree(self.root / "features", ignore_errors=True)
        shutil.rmtree(self.root / "partial", ignore_errors=True)
