"""Catalogues: TOML files listing the backbones to consider.

One file may hold many ``[[model]]`` tables (see DESIGN.md). Loading validates every entry and
reports *all* problems at once, each with the file, the entry and what was expected. Relative
checkpoint paths are resolved against the catalogue file. Built-in catalogues are named by a bare
word (``demo``) instead of a path.
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zooforge.errors import CatalogueError

__all__ = ["CatalogueEntry", "load_catalogue", "filter_entries", "entry_digest", "BUILTIN_CATALOGUES", "SOURCES"]

SOURCES = ("timm", "hf", "local")
MODALITIES = ("image", "text")
_DEMO_DIR = Path(__file__).parent / "demo"
BUILTIN_CATALOGUES = {
    "demo": _DEMO_DIR / "catalogue.toml",
    "text-demo": _DEMO_DIR / "text.toml",        # needs the text-demo extra (real all-MiniLM-L6-v2)
}


@dataclass(frozen=True)
class CatalogueEntry:
    """One backbone. Optional fields override the model's own preprocessing configuration."""

    id: str = field(metadata={"help": "unique id, e.g. 'timm/resnet50.a1_in1k'"})
    source: str = field(metadata={"help": "timm | hf | local"})
    name: str = field(metadata={"help": "timm architecture or Hugging Face hub id / local folder"})
    checkpoint: Path | None = field(default=None, metadata={"help": "local weights (.safetensors/.pt/.pth)"})
    num_classes: int | None = field(default=None, metadata={"help": "source head size when weights carry a head"})
    input_size: tuple[int, int, int] | None = field(default=None, metadata={"help": "[C, H, W]"})
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_pct: float | None = field(default=None, metadata={"help": "1.0 = resize only, no crop"})
    interpolation: str | None = field(default=None, metadata={"help": "bilinear | bicubic | nearest"})
    pretrained: bool = field(default=True, metadata={"help": "load hub weights when no checkpoint is given"})
    revision: str | None = field(default=None, metadata={"help": "hub commit (sha, branch or tag) to load; pins an audit"})
    modality: str | None = field(default=None, metadata={"help": "image | text (hf only; inferred if unset)"})
    model_args: dict[str, Any] = field(default_factory=dict, metadata={"help": "extra create_model kwargs"})
    tags: tuple[str, ...] = ()
    description: str = ""
    catalogue: Path | None = field(default=None, compare=False, metadata={"help": "file it came from"})


_FIELDS = {f for f in CatalogueEntry.__dataclass_fields__ if f != "catalogue"}
# Fields added after digests of entries were first stored (resume keys, the shipped demo truth).
_ADDED_FIELDS = ("revision",)


def entry_digest(entry: CatalogueEntry, *, checkpoint_content: bool = False) -> str:
    """A digest of everything in an entry that determines a model's outputs (not its catalogue file,
    description or tags), and of its checkpoint file: by size and modification time (cheap, for
    keys checked at every resume), or by content (for artefacts that travel between machines,
    where modification times do not survive a clone)."""
    import hashlib
    import json
    from dataclasses import asdict

    fields = {k: v for k, v in asdict(entry).items() if k not in ("catalogue", "description", "tags")}
    for key in _ADDED_FIELDS:                      # unset, they leave the digests made before them unchanged
        if fields.get(key) is None:
            fields.pop(key, None)
    if entry.checkpoint is not None:
        path = Path(entry.checkpoint)
        try:
            if checkpoint_content:
                fields["checkpoint_bytes"] = (hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
                                              if path.is_file() else None)
            else:
                stat = path.stat()
                fields["checkpoint_stat"] = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            fields["checkpoint_stat"] = None            # missing: loading it will record the error
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists() and str(path) in BUILTIN_CATALOGUES:
        return BUILTIN_CATALOGUES[str(path)]
    return p


def load_catalogue(path: str | Path, *, check_files: bool = True) -> list[CatalogueEntry]:
    """Read and validate one catalogue file (or a built-in name such as ``demo``).

    ``check_files`` also requires every local checkpoint to exist; audits turn it off so that one
    missing file fails one cell instead of the whole run.
    """
    file = _resolve(path)
    if not file.is_file():
        names = ", ".join(BUILTIN_CATALOGUES)
        raise CatalogueError(f"catalogue {str(path)!r} not found: give a TOML file path or a built-in name ({names}).")
    try:
        data = tomllib.loads(file.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogueError(f"{file}: not valid TOML: {exc}") from None
    extra = set(data) - {"model", "description"}
    if extra:
        raise CatalogueError(f"{file}: unknown top-level key(s) {sorted(extra)}; models go in [[model]] tables.")
    raw = data.get("model", [])
    if not isinstance(raw, list) or not raw:
        raise CatalogueError(f"{file}: no [[model]] tables; a catalogue needs at least one model.")
    entries, problems, seen = [], [], {}
    for index, table in enumerate(raw):
        where = f"{file}: model #{index + 1}" + (f" (id {table.get('id')!r})" if isinstance(table, dict) and "id" in table else "")
        errors: list[str] = []
        entry = _parse_entry(table, file, errors, check_files) if isinstance(table, dict) else None
        if not isinstance(table, dict):
            errors.append("must be a table")
        if entry is not None and entry.id in seen:
            errors.append(f"duplicate id {entry.id!r} (first used by model #{seen[entry.id] + 1})")
        if errors:
            problems.extend(f"{where}: {e}" for e in errors)
        elif entry is not None:
            seen[entry.id] = index
            entries.append(entry)
    if problems:
        raise CatalogueError(f"{len(problems)} problem(s) in catalogue:\n  " + "\n  ".join(problems))
    return entries


def _parse_entry(t: dict, file: Path, errors: list[str], check_files: bool) -> CatalogueEntry | None:
    unknown = set(t) - _FIELDS
    if unknown:
        errors.append(f"unknown field(s) {sorted(unknown)}; valid fields: {', '.join(sorted(_FIELDS))}")
    for key in ("id", "source", "name"):
        if not isinstance(t.get(key), str) or not t.get(key):
            errors.append(f"`{key}` is required and must be a non-empty string; got {t.get(key)!r}")
    if isinstance(t.get("source"), str) and t["source"] not in SOURCES:
        errors.append(f"`source` must be one of {', '.join(SOURCES)}; got {t['source']!r}")
    if t.get("source") == "local" and "checkpoint" not in t:
        errors.append("`checkpoint` is required when source = 'local'")
    checkpoint = None
    if "checkpoint" in t:
        if not isinstance(t["checkpoint"], str):
            errors.append(f"`checkpoint` must be a path string; got {t['checkpoint']!r}")
        else:
            checkpoint = (file.parent / t["checkpoint"]).expanduser().resolve()
            folder_ok = t.get("source") == "hf" and checkpoint.is_dir()      # a save_pretrained folder
            if check_files and not (checkpoint.is_file() or folder_ok):
                what = "file or save_pretrained folder" if t.get("source") == "hf" else "file"
                errors.append(f"`checkpoint` {what} not found: {checkpoint}")
    name = t.get("name")
    if t.get("source") == "hf" and isinstance(name, str) and name:
        # a save_pretrained folder given as `name` is relative to the catalogue, as `checkpoint` is;
        # an explicit path that does not exist is an error here, never a hub lookup of a path
        local = (file.parent / name).expanduser()
        explicit = name.startswith(("./", "../", "/", "~"))
        if local.is_dir():
            t = t | {"name": str(local.resolve())}
        elif explicit and check_files:
            errors.append(f"`name` {name!r} looks like a folder but {local.resolve()} does not exist")
    num_classes = t.get("num_classes")
    if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0):
        errors.append(f"`num_classes` must be a non-negative integer; got {num_classes!r}")
    input_size = _int_triple(t.get("input_size"), errors)
    mean = _float_tuple(t.get("mean"), "mean", errors)
    std = _float_tuple(t.get("std"), "std", errors)
    if std is not None and any(s <= 0 for s in std):
        errors.append(f"`std` entries must be positive; got {list(std)}")
    for key, values in (("mean", mean), ("std", std)):
        if values is not None and input_size is not None and len(values) not in (1, input_size[0]):
            errors.append(f"`{key}` has {len(values)} values but input_size has {input_size[0]} channels")
    crop_pct = t.get("crop_pct")
    if crop_pct is not None and (not isinstance(crop_pct, (int, float)) or not 0 < crop_pct <= 1):
        errors.append(f"`crop_pct` must be in (0, 1]; got {crop_pct!r}")
    interpolation = t.get("interpolation")
    if interpolation is not None and interpolation not in ("bilinear", "bicubic", "nearest"):
        errors.append(f"`interpolation` must be bilinear, bicubic or nearest; got {interpolation!r}")
    modality = t.get("modality")
    if modality is not None and modality not in MODALITIES:
        errors.append(f"`modality` must be image or text; got {modality!r}")
    if not isinstance(t.get("pretrained", True), bool):
        errors.append(f"`pretrained` must be true or false; got {t.get('pretrained')!r}")
    if not isinstance(t.get("model_args", {}), dict):
        errors.append(f"`model_args` must be a table; got {t.get('model_args')!r}")
    revision = t.get("revision")
    if revision is not None and (not isinstance(revision, str) or not revision or "@" in revision):
        errors.append(f"`revision` must be a commit sha, branch or tag (a non-empty string without @); got {revision!r}")
    tags = t.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(x, str) for x in tags):
        errors.append(f"`tags` must be a list of strings; got {tags!r}")
    if errors:
        return None
    return CatalogueEntry(
        id=t["id"], source=t["source"], name=t["name"], checkpoint=checkpoint, num_classes=num_classes,
        input_size=input_size, mean=mean, std=std, crop_pct=None if crop_pct is None else float(crop_pct),
        interpolation=interpolation, pretrained=t.get("pretrained", True), revision=revision, modality=modality,
        model_args=dict(t.get("model_args", {})), tags=tuple(tags), description=t.get("description", ""),
        catalogue=file,
    )


def _int_triple(value, errors):
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        errors.append(f"`input_size` must be 3 positive integers [C, H, W]; got {value!r}")
        return None
    return tuple(value)


def _float_tuple(value, key, errors):
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, (int, float)) for v in value):
        errors.append(f"`{key}` must be a list of numbers; got {value!r}")
        return None
    return tuple(float(v) for v in value)


def filter_entries(entries: list[CatalogueEntry], patterns: list[str] | None) -> list[CatalogueEntry]:
    """Entries whose id matches any fnmatch pattern (all entries when ``patterns`` is empty)."""
    if not patterns:
        return list(entries)
    return [e for e in entries if any(fnmatch.fnmatchcase(e.id, p) for p in patterns)]
