"""What an epoch checkpoint of the training loop must match to be resumed: a key of everything that
determines the result, not only the config: a digest of the model's starting weights (architecture,
head shape and values), of the training inputs and labels, and of the validation set. A checkpoint
of another run in the same folder is refused, naming what differs, and left untouched."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from zooforge.errors import ZooforgeError

__all__ = ["run_key", "check_resumable"]


def _digest(*parts) -> str:
    """A content digest of tensors (or tuples of them), state dicts and None, in order."""
    h = hashlib.blake2b(digest_size=16)

    def feed(obj):
        if obj is None:
            h.update(b"none")
        elif isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(obj, dict):
            for k in obj:
                h.update(str(k).encode())
                feed(obj[k])
        elif isinstance(obj, (tuple, list)):
            for item in obj:
                feed(item)
        else:
            h.update(repr(obj).encode())

    for part in parts:
        feed(part)
    return h.hexdigest()


def run_key(model: nn.Module, cfg, train_x, train_y, val_x, val_y) -> dict:
    """What a checkpoint must match to be resumed: the config (less where to save and whether to
    print), the starting weights and the data."""
    config = {k: v for k, v in asdict(cfg).items() if k not in ("progress", "checkpoint_dir")}
    return {"config": config, "model weights": _digest(model.state_dict()),
            "training data": _digest(train_x, train_y), "validation data": _digest(val_x, val_y)}


def check_resumable(ckpt: Path, stored: dict | None, key: dict) -> None:
    """Refuse a checkpoint whose stored key (``stored``) is not this run's ``key``, naming what differs."""
    if stored is None:
        raise ZooforgeError(f"checkpoint {ckpt} predates run keys, so it cannot be shown to belong to this run; "
                            f"delete {ckpt.parent} to start fresh, or use another folder.")
    differ = [k for k in key if stored.get(k) != key[k]]
    if not differ:
        return
    detail = ""
    if "config" in differ:
        fields = sorted(f for f in key["config"] if stored["config"].get(f) != key["config"][f])
        detail = " (config: " + ", ".join(f"{f} {stored['config'].get(f)!r} there, {key['config'][f]!r} here"
                                        for f in fields) + ")"
    raise ZooforgeError(f"checkpoint {ckpt} belongs to another run: its {', '.join(differ)} differ from this "
                        f"one's{detail}. It was left untouched; use another output folder, or delete "
                        f"{ckpt.parent} to start fresh.")
