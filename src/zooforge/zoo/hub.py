"""Reaching the Hugging Face hub: a fast reachability check (a DNS failure answers in milliseconds;
without it every hub model cost ~50 s of client retries), offline mode while it is unreachable, and
load errors that say whether the hub refused (no such repository, revision or file) or could not be
reached, each with the fix."""

from __future__ import annotations

from typing import Any

from zooforge.errors import BackboneLoadError, describe
from zooforge.zoo.catalogue import CatalogueEntry

__all__ = ["hub_refusal", "hub_repo", "hub_unreachable", "offline_hint", "offline_if_unreachable", "timm_hub_id"]

# How long a failed reachability check of the hub is believed (an audit of hours re-checks now and then).
HUB_CHECK_TTL_S = 60.0
HUB_CONNECT_TIMEOUT_S = 3.0
_hub_check: dict[str, Any] = {"at": -1e9, "reason": None}


def hub_unreachable() -> str | None:
    """Why the Hugging Face hub (``HF_ENDPOINT``) cannot be reached, or None when it can (or when
    offline mode is set anyway). A DNS failure answers in milliseconds; without this check every
    hub model cost ~50 s of client retries before failing."""
    import socket
    import time as _time
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return None
    now = _time.monotonic()
    if now - _hub_check["at"] < HUB_CHECK_TTL_S:
        return _hub_check["reason"]
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=HUB_CONNECT_TIMEOUT_S).close()
        reason = None
    except OSError as exc:
        reason = f"the hub host {host}:{port} cannot be {'resolved' if isinstance(exc, socket.gaierror) else 'reached'} ({exc})"
    _hub_check.update(at=now, reason=reason)
    return reason


class offline_if_unreachable:
    """Within: the hub clients run offline (cache only, no retries) when the hub cannot be reached."""

    def __enter__(self) -> str | None:
        from huggingface_hub import constants

        self.reason = hub_unreachable()
        self.saved = constants.HF_HUB_OFFLINE
        if self.reason:
            constants.HF_HUB_OFFLINE = True
        return self.reason

    def __exit__(self, *exc):
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = self.saved
        return False


def hub_refusal(exc: Exception) -> str | None:
    """What the hub answered when it was reached and said no (no such repository, revision or file,
    a gated or private repo), or None when the failure was about reaching it."""
    from huggingface_hub import errors

    seen, e = set(), exc
    while e is not None and id(e) not in seen:              # transformers and timm wrap the client's error
        seen.add(id(e))
        if isinstance(e, errors.RevisionNotFoundError):
            return "the hub has no such revision"
        if isinstance(e, errors.GatedRepoError):
            return "the repository is gated: accept its terms on the hub and log in (hf auth login)"
        if isinstance(e, errors.RepositoryNotFoundError):
            return "the hub has no such repository (or it is private: log in with hf auth login)"
        if isinstance(e, errors.EntryNotFoundError):
            return "the repository has no such file"
        e = e.__cause__ or e.__context__
    return None


def offline_hint(entry: CatalogueEntry, exc: Exception, reason: str | None = None) -> BackboneLoadError:
    # one line, so that a table cell (which keeps the first line) still says how to fix it
    from huggingface_hub import constants

    pinned, at = (f" at revision {entry.revision}", f" --revision {entry.revision}") if entry.revision else ("", "")
    refusal = None if reason or constants.HF_HUB_OFFLINE else hub_refusal(exc)
    if refusal:
        return BackboneLoadError(
            f"cannot load model {entry.id!r} ({entry.source} {entry.name!r}{pinned}): {refusal} (not found on "
            f"{constants.ENDPOINT}). Fix the name or revision in the catalogue. [{describe(exc)}]")
    why = reason or "the hub cannot be reached, or offline mode (HF_HUB_OFFLINE=1) is set"
    repo = hub_repo(entry)
    where = (f"the hub repository {repo}{pinned} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE})"
             if repo else "they are not in the local Hugging Face cache")
    fetch = (f"run `hf download {repo}{at}` on a connected machine and copy its cache here (same HF_HOME)" if repo else
             "download them once on a connected machine into the Hugging Face cache (HF_HOME) and copy that cache here")
    return BackboneLoadError(
        f"cannot load weights for model {entry.id!r} ({entry.source} {entry.name!r}): {where} and {why}. Fix: "
        f"{fetch}, give the entry a local `checkpoint = \"path/to/weights.safetensors\"` (or a save_pretrained "
        f"folder), or set `pretrained = false` for random weights. [{describe(exc)}]"
    )


def hub_repo(entry: CatalogueEntry) -> str | None:
    """The Hugging Face Hub repository an entry's pretrained weights come from (without revision),
    or None where they come from elsewhere (a local folder, a timm tag whose weights timm fetches
    from another URL)."""
    from pathlib import Path

    name = str(entry.name)
    if entry.source == "timm":
        return timm_hub_id(name)
    if entry.source == "hf" and not entry.checkpoint and not Path(name).exists() and not name.startswith("python:"):
        return name
    return None


def timm_hub_id(name: str) -> str | None:
    """The hub repository of a timm model name (an ``hf-hub:`` name's, or the tag's ``hf_hub_id``),
    without revision; None when timm names none."""
    if name.startswith(("hf-hub:", "hf_hub:")):
        return name.split(":", 1)[1].split("@")[0]
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
    except Exception:               # an unknown tag: the load error says so
        return None
    return cfg.hf_hub_id.split("@")[0] if cfg is not None and cfg.hf_hub_id else None
