"""Catalogues from a model hub: timm's registry and the Hugging Face Hub, written as catalogue TOML.

``catalogue_from_timm`` reads timm's own registry (``timm.list_models(..., pretrained=True)`` and
each tag's ``pretrained_cfg``): no network, no weights. Every entry carries the tagged name, the
input size, mean/std, crop_pct and interpolation of that tag, its head size, and tags for the
architecture, the pretrained tag, the source data the tag names (in1k, in22k, laion2b, ...) and the
license where the cfg has one. The cost filters use zooforge's own count (parameters, and MACs of
one forward pass at the tag's input size, ``zooforge.zoo.cost``), measured on the meta device (no
memory, no weights) and cached per (architecture, input size, head, timm version) in
``<cache>/timm_costs.json``, so a second listing of a thousand models costs nothing.

``catalogue_from_hub`` lists Hugging Face Hub repositories through ``huggingface_hub.HfApi`` (any
``HF_ENDPOINT``) and pins each to the commit sha the hub reports, so an audit of the catalogue loads
the same weights next month (the entry's ``revision``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Sequence

from zooforge.errors import ZooforgeError
from zooforge.zoo.catalogue import CatalogueEntry

__all__ = ["catalogue_from_timm", "catalogue_from_hub", "dump_catalogue", "timm_cost", "SOURCE_DATA_TAGS"]

# Pretrained-tag fragments that name the source data (timm's tag convention: <recipe>_<data>[_ft_<data>]).
SOURCE_DATA_TAGS = ("in1k", "in12k", "in21k", "in22k", "laion2b", "laion400m", "laion", "openai", "dfn2b", "dfn5b",
                    "datacompxl", "metaclip", "webli", "merged2b", "jft", "ig1b", "ig3b", "yfcc100m", "lvd142m", "lvd1689m")
def timm_cost(arch: str, input_size: Sequence[int], num_classes: int, *, cache_dir=None,
              _memo: dict | None = None) -> tuple[int, float]:
    """(parameters, GMACs at ``input_size``, batch 1) of a timm architecture, counted on the meta
    device and cached on disk (see the module docstring)."""
    import timm
    import torch

    from zooforge.zoo.cost import count_gmacs, count_params, cost_file, read_costs, timm_cost_key, write_costs

    key = timm_cost_key(arch, input_size, num_classes)
    path = cost_file(cache_dir)
    memo = _memo if _memo is not None else read_costs(path)
    if key not in memo:
        with torch.device("meta"):
            model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
        example = torch.empty(1, *input_size, device="meta")
        memo[key] = [count_params(model), count_gmacs(model, example)]
        if _memo is None:
            write_costs(path, memo)
    params, gmacs = memo[key]
    return int(params), float(gmacs)


def _tags(arch: str, tag: str, cfg) -> tuple[str, ...]:
    parts = re.split(r"[_.]", tag)
    data = [p for p in parts if p in SOURCE_DATA_TAGS]
    out = [arch, tag] + [f"data:{d}" for d in dict.fromkeys(data)]
    if "ft" in parts:
        out.append("fine-tuned")
    if getattr(cfg, "license", None):
        out.append(f"license:{cfg.license}")
    return tuple(out)


def catalogue_from_timm(patterns: Iterable[str] = ("*",), *, pretrained: bool = True, exclude: Iterable[str] = (),
                        max_gmacs: float | None = None, max_params: float | None = None, cache_dir=None,
                        progress: bool = False) -> list[CatalogueEntry]:
    """Entries for every timm model matching ``patterns`` (fnmatch, as ``timm.list_models``), with
    a pretrained tag when ``pretrained``; ``max_gmacs`` / ``max_params`` (millions) keep models
    within zooforge's own cost count. Ordered as timm lists them."""
    import timm

    from zooforge.zoo.features import progress_bar

    patterns, exclude = list(patterns) or ["*"], list(exclude)
    names = timm.list_models(patterns, pretrained=pretrained, exclude_filters=exclude)
    if not names:
        raise ZooforgeError(f"no timm model matches {patterns}" + (f" without {exclude}" if exclude else "") +
                            (" with pretrained weights" if pretrained else "") +
                            f" (timm {timm.__version__}); try a wider pattern such as 'resnet*'.")
    from zooforge.zoo.cost import cost_file, read_costs, write_costs

    path = cost_file(cache_dir)
    memo = read_costs(path)
    before = len(memo)
    entries = []
    try:
        with progress_bar(progress, "listing timm models", len(names)) as advance:
            for name in names:
                advance(1)
                entries += _timm_entry(name, pretrained, max_gmacs, max_params, cache_dir, memo)
    finally:
        if len(memo) > before:
            write_costs(path, memo)
    if not entries:
        raise ZooforgeError(f"none of the {len(names)} timm model(s) matching {patterns} fits "
                            f"--max-gmacs {max_gmacs} / --max-params {max_params}.")
    return entries


def _timm_entry(name: str, pretrained: bool, max_gmacs, max_params, cache_dir, memo) -> list[CatalogueEntry]:
    """[the entry of timm model ``name``], or [] when it does not fit the cost filters."""
    import timm
    from timm.models import get_pretrained_cfg

    arch, _, tag = name.partition(".")
    cfg = get_pretrained_cfg(name) if tag else None
    input_size = tuple(cfg.input_size) if cfg else tuple(timm.get_pretrained_cfg_value(arch, "input_size") or (3, 224, 224))
    num_classes = int(cfg.num_classes) if cfg and cfg.num_classes is not None else 1000
    if max_gmacs is not None or max_params is not None:
        params, gmacs = timm_cost(arch, input_size, num_classes, cache_dir=cache_dir, _memo=memo)
        if (max_gmacs is not None and gmacs > max_gmacs) or (max_params is not None and params / 1e6 > max_params):
            return []
    return [CatalogueEntry(
        id=f"timm/{name}", source="timm", name=name, num_classes=num_classes,
        input_size=input_size if cfg else None,
        mean=tuple(cfg.mean) if cfg and cfg.mean else None, std=tuple(cfg.std) if cfg and cfg.std else None,
        crop_pct=float(cfg.crop_pct) if cfg and cfg.crop_pct else None,
        interpolation=cfg.interpolation if cfg and cfg.interpolation in ("bilinear", "bicubic", "nearest") else None,
        pretrained=pretrained, tags=_tags(arch, tag, cfg) if tag else (arch,),
        description=f"timm {name}" + (f" ({cfg.hf_hub_id})" if cfg and cfg.hf_hub_id else ""))]


HUB_TASKS = ("image-classification", "image-feature-extraction", "sentence-similarity", "feature-extraction",
             "text-classification")


def catalogue_from_hub(task: str, *, library: str | None = None, search: str | None = None,
                       sort: str = "downloads", limit: int = 50, endpoint: str | None = None) -> list[CatalogueEntry]:
    """Entries for the Hub's models of ``task`` (optionally of ``library`` timm|transformers and
    matching ``search``), most downloaded first, each pinned to the commit sha the hub reports."""
    if task not in HUB_TASKS:
        raise ZooforgeError(f"unknown task {task!r}; choose one of {', '.join(HUB_TASKS)}.")
    if library not in (None, "timm", "transformers", "sentence-transformers"):
        raise ZooforgeError(f"unknown library {library!r}; choose timm, transformers or sentence-transformers.")
    from huggingface_hub import HfApi

    from zooforge.zoo.hub import hub_unreachable

    reason = hub_unreachable()
    if reason is not None:
        raise ZooforgeError(f"the Hugging Face Hub is unreachable ({reason}); listing needs it. Set HF_ENDPOINT to "
                            "a reachable mirror, or write the catalogue by hand (see README: Catalogues).")
    api = HfApi(endpoint=endpoint)
    try:
        infos = list(api.list_models(pipeline_tag=task, filter=library, search=search, sort=sort, limit=limit,
                                     expand=["sha", "library_name", "pipeline_tag", "tags", "downloads"]))
    except Exception as exc:          # noqa: BLE001 - the client raises HTTP, connection and parsing errors
        raise ZooforgeError(f"listing the Hub's {task} models failed: {type(exc).__name__}: {exc}") from None
    modality = "text" if task in ("sentence-similarity", "feature-extraction", "text-classification") else "image"
    entries = []
    for info in infos:
        lib = getattr(info, "library_name", None) or library
        tags = [t for t in (getattr(info, "tags", None) or []) if not t.startswith(("region:", "endpoints_"))][:12]
        if lib == "timm":
            entries.append(CatalogueEntry(id=info.id, source="timm", name=f"hf-hub:{info.id}", revision=info.sha,
                                          tags=tuple(tags), description=f"{info.id} ({task}, timm)"))
        else:
            entries.append(CatalogueEntry(id=info.id, source="hf", name=info.id, revision=info.sha, modality=modality,
                                          tags=tuple(tags), description=f"{info.id} ({task}, {lib or 'transformers'})"))
    if not entries:
        raise ZooforgeError(f"the Hub lists no {task} model" + (f" of library {library}" if library else "") +
                            (f" matching {search!r}" if search else "") + ".")
    return entries


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))                   # a TOML basic string: JSON's escapes are TOML's


def dump_catalogue(entries: Sequence[CatalogueEntry], path: str | Path, header: str = "") -> Path:
    """Write ``entries`` as catalogue TOML that ``load_catalogue`` reads back to equal entries."""
    from dataclasses import fields

    from zooforge.zoo.cache import atomic_write_bytes

    defaults = {f.name: f.default for f in fields(CatalogueEntry)}
    lines = [f"# {line}" for line in header.splitlines()] + ([""] if header else [])
    for e in entries:
        lines.append("[[model]]")
        for f in fields(CatalogueEntry):
            value = getattr(e, f.name)
            if f.name == "catalogue" or value is None or (f.name not in ("id", "source", "name") and value == defaults.get(f.name)):
                continue
            if f.name in ("model_args", "tags") and not value:
                continue
            if f.name == "checkpoint":
                value = str(value)
            lines.append(f"{f.name} = {_toml_value(value)}")
        lines.append("")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path
