"""The eval transform of a model, applied to uint8 tensors so that it works a batch at a time.

The configuration comes from timm (``resolve_data_config`` on the model's ``pretrained_cfg``) with the
catalogue entry's overrides. The steps are those of timm's eval ``create_transform`` (resize the
shorter side to size / crop_pct, centre-crop, scale to [0, 1], normalise) done with torchvision's
tensor ops instead of PIL, which lets in-memory datasets be transformed a whole batch per call. Results
agree with timm's PIL pipeline to a few grey levels (different antialiasing filters).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

__all__ = ["ImageTransform"]

_MODES = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
          "nearest": InterpolationMode.NEAREST}


@dataclass(frozen=True)
class ImageTransform:
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = 0.875
    interpolation: str = "bilinear"

    @classmethod
    def from_timm(cls, model, entry) -> "ImageTransform":
        from timm.data import resolve_data_config

        overrides = {k: v for k, v in {
            "input_size": entry.input_size, "mean": entry.mean, "std": entry.std,
            "crop_pct": entry.crop_pct, "interpolation": entry.interpolation}.items() if v is not None}
        cfg = resolve_data_config(overrides, model=model)
        channels = cfg["input_size"][0]
        widen = lambda v: tuple(float(x) for x in (v if len(v) == channels else tuple(v) * channels))  # noqa: E731
        interpolation = cfg.get("interpolation", "bilinear")
        return cls(tuple(int(x) for x in cfg["input_size"]), widen(cfg["mean"]), widen(cfg["std"]),
                   float(cfg.get("crop_pct", 0.875)), interpolation if interpolation in _MODES else "bilinear")

    def describe(self) -> dict:
        return asdict(self)

    def resize_crop(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (..., C, H, W) -> uint8 (..., C, h, w) at the model's input size."""
        _, h, w = self.input_size
        mode = _MODES[self.interpolation]
        if h == w:
            size = [math.floor(h / self.crop_pct)]
        else:
            size = [math.floor(h / self.crop_pct), math.floor(w / self.crop_pct)]
        out = TF.resize(images, size, interpolation=mode, antialias=mode != InterpolationMode.NEAREST)
        return TF.center_crop(out, [h, w])

    def normalize(self, images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 (N, C, h, w) -> normalised float (N, C, h, w)."""
        x = images.to(dtype).div_(255.0)
        mean = torch.tensor(self.mean, dtype=dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=dtype, device=x.device).view(1, -1, 1, 1)
        return x.sub_(mean).div_(std)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.resize_crop(images))
