"""Content-addressed, atomic, resumable on-disk store of extracted features.

Layout under the root (``$ZOOFORGE_CACHE_DIR``, default ``~/.cache/zooforge``)::

    features/<k[:2]>/<key>/data.safetensors   the arrays
    features/<k[:2]>/<key>/meta.json          provenance + sha256 of data.safetensors
    partial/<key>/shard-000003.safetensors    finished shards of an unfinished extraction (+ .sha256)

The key is the sha256 of everything that determines the result (model id and weights digest,
dataset fingerprint, transform, layers, library versions). Every file is written to a temporary name
and renamed into place, so a crash leaves either the old state or the new one, never half a file. A
corrupt or truncated entry fails its checksum on read; it is deleted and reported as a miss.

A cache that cannot be written (read-only, full disk, no permission) never fails the work: the
failed write's temporary file is removed, one warning says so, and the features are used from
memory. Folders and files follow the umask (not ``mkdtemp``'s 0700), so a team can share a root.
``zooforge cache info|clear|prune`` (:meth:`FeatureCache.info`, :meth:`~FeatureCache.clear`,
:meth:`~FeatureCache.prune`) inspect and trim it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
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
_DIR_MODE = _FILE_MODE | ((_FILE_MODE & 0o444) >> 2)     # x wherever r is granted: 0o755 under umask 022


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a synced temporary file and a rename: never half a file, and
    no temporary left behind when the write fails (a full disk stays no fuller)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, _FILE_MODE)                 # mkstemp's 0600 would hide results from other users
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save

    atomic_write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


# prune leaves temporaries younger than this alone: they may be writes in flight in another process.
TEMPORARY_GRACE_S = 3600.0
_warned_unwritable: set[str] = set()


def _unwritable(root: Path, exc: OSError) -> None:
    """Warn once per root that results are kept in memory only."""
    if str(root) not in _warned_unwritable:
        _warned_unwritable.add(str(root))
        warnings.warn(f"the feature cache {root} cannot be written ({exc.strerror or exc}); features are used "
                      f"from memory and not cached. Free space, fix the permissions or set --cache-dir / "
                      f"ZOOFORGE_CACHE_DIR.", stacklevel=3)


def _tree_size(path: Path) -> tuple[int, int]:
    """(files, bytes) under ``path``."""
    files = size = 0
    for p in path.rglob("*"):
        try:
            if p.is_file():
                files += 1
                size += p.stat().st_size
        except OSError:
            continue
    return files, size


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

    def store(self, key: str, arrays: dict[str, np.ndarray], meta: dict) -> bool:
        """Write a complete entry; False (with one warning) when the cache cannot be written."""
        entry = self._entry_dir(key)
        tmp = None
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{key[:12]}."))
            os.chmod(tmp, _DIR_MODE)              # mkdtemp's 0700 would keep the entry from the team
            _save_arrays(tmp / "data.safetensors", arrays)
            meta = dict(meta, sha256=_sha256(tmp / "data.safetensors"), key=key)
            atomic_write_bytes(tmp / "meta.json", json.dumps(meta, indent=1, default=str).encode())
            shutil.rmtree(entry, ignore_errors=True)
            os.replace(tmp, entry)
        except OSError as exc:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            _unwritable(self.root, exc)
            return False
        shutil.rmtree(self._partial_dir(key), ignore_errors=True)
        return True

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

    def store_shard(self, key: str, index: int, arrays: dict[str, np.ndarray]) -> bool:
        """Write one finished shard; False (with one warning) when the cache cannot be written."""
        path = self._partial_dir(key) / f"shard-{index:06d}.safetensors"
        try:
            _save_arrays(path, arrays)
            # the checksum is written last: a shard without one is unfinished and is redone
            atomic_write_bytes(path.with_suffix(".sha256"), _sha256(path).encode())
        except OSError as exc:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
            _unwritable(self.root, exc)
            return False
        return True

    # ---- maintenance -----------------------------------------------------------------------------
    def _entries(self) -> list[tuple[Path, float, int]]:
        """(folder, last use (atime or mtime, the later), bytes) of every complete entry."""
        out = []
        for meta in (self.root / "features").glob("*/*/meta.json"):
            folder = meta.parent
            try:
                stats = [p.stat() for p in folder.iterdir()]
            except OSError:
                continue
            used = max(max(st.st_atime, st.st_mtime) for st in stats) if stats else 0.0
            out.append((folder, used, sum(st.st_size for st in stats)))
        return out

    def _temporaries(self, min_age_s: float = 0.0) -> list[Path]:
        """Temporary files and folders of interrupted writes (names start with '.'), at least
        ``min_age_s`` old (so a write in flight in another process is left alone)."""
        if not self.root.is_dir():
            return []
        now, out = time.time(), []
        for p in self.root.rglob(".*"):
            try:
                if now - p.stat().st_mtime >= min_age_s:
                    out.append(p)
            except OSError:
                continue
        return out

    def info(self) -> dict[str, Any]:
        """Root, complete entries and their bytes, unfinished extractions, leftover temporaries."""
        entries = self._entries()
        partial_files, partial_bytes = _tree_size(self.root / "partial")
        temps = self._temporaries()
        temp_bytes = sum(_tree_size(t)[1] if t.is_dir() else t.stat().st_size for t in temps if t.exists())
        return {"root": str(self.root), "entries": len(entries), "entry_bytes": sum(e[2] for e in entries),
                "partial_extractions": len(list((self.root / "partial").glob("*"))) if (self.root / "partial").is_dir() else 0,
                "partial_bytes": partial_bytes, "partial_files": partial_files,
                "temporaries": len(temps), "temporary_bytes": temp_bytes}

    def prune(self, *, older_than_days: float | None = None, max_bytes: int | None = None,
              partial: bool = True) -> dict[str, int]:
        """Remove leftover temporaries, unfinished extractions (``partial``), entries unused for
        ``older_than_days``, then the least recently used entries until at most ``max_bytes`` remain.
        Returns what was removed (counts and bytes)."""
        removed = {"entries": 0, "bytes": 0, "temporaries": 0, "partial_extractions": 0}
        for t in self._temporaries(min_age_s=TEMPORARY_GRACE_S):
            removed["bytes"] += _tree_size(t)[1] if t.is_dir() else t.stat().st_size
            shutil.rmtree(t, ignore_errors=True) if t.is_dir() else t.unlink(missing_ok=True)
            removed["temporaries"] += 1
        if partial and (self.root / "partial").is_dir():
            for d in (self.root / "partial").iterdir():
                removed["bytes"] += _tree_size(d)[1]
                shutil.rmtree(d, ignore_errors=True)
                removed["partial_extractions"] += 1
        entries = sorted(self._entries(), key=lambda e: e[1])          # least recently used first
        total = sum(e[2] for e in entries)
        cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
        for folder, used, size in entries:
            too_old = cutoff is not None and used < cutoff
            too_big = max_bytes is not None and total > max_bytes
            if not (too_old or too_big):
                continue
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
            removed["entries"] += 1
            removed["bytes"] += size
        return removed

    def clear(self) -> None:
        shutil.rmtree(self.root / "features", ignore_errors=True)
        shutil.rmtree(self.root / "partial", ignore_errors=True)
