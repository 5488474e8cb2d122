"""Procedural demo tasks whose targets are not classes: ``demo:size`` (regression) and ``demo:tags``
(multi-label), drawn like the classification tasks (32 x 32 RGB, one seeded generator per sample).

* ``size``: one filled shape of a random kind and colour; the target is its radius in pixels, a real
  number in [3, 13]. A model must see extent, not identity.
* ``tags``: one to three small shapes (circle, square, triangle, cross), each in its own quadrant;
  the tags are the kinds present. A model must see several objects at once.

``n`` is the number of samples (these tasks have no classes to count per); the default is 500.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from PIL import ImageDraw

from zooforge.zoo.demo.tasks import SIZE, canvas, random_colour, polygon_points

__all__ = ["KIND_TASKS", "KindTask", "generate_kind"]

_SHAPES = ("circle", "square", "triangle", "cross")


@dataclass(frozen=True)
class KindTask:
    name: str
    kind: str                                        # "regression" | "multilabel"
    names: tuple[str, ...]                           # target names, or tag names
    draw: Callable[[np.random.Generator], tuple[np.ndarray, Any]]
    summary: str
    default_n: int = 500


def _shape(d: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, rot: float, col) -> None:
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
    elif kind == "square":
        d.polygon(polygon_points(cx, cy, r, 4, rot), fill=col)
    elif kind == "triangle":
        d.polygon(polygon_points(cx, cy, r, 3, rot), fill=col)
    else:
        w = max(1.0, r / 3)
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=col)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=col)


def _draw_size(rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    img = canvas(rng)
    r = float(rng.uniform(3.0, 13.0))
    cx, cy = rng.uniform(r + 1, SIZE - r - 1, size=2) if r < SIZE / 2 - 2 else (SIZE / 2, SIZE / 2)
    _shape(ImageDraw.Draw(img), _SHAPES[int(rng.integers(len(_SHAPES)))], cx, cy, r,
           rng.uniform(0, 2 * math.pi), random_colour(rng))
    return np.asarray(img), [r]


def _draw_tags(rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    img = canvas(rng)
    d = ImageDraw.Draw(img)
    count = int(rng.integers(1, 4))
    kinds = [str(k) for k in rng.choice(_SHAPES, size=count, replace=False)]
    quadrants = rng.choice(4, size=count, replace=False)
    half = SIZE / 2
    for kind, q in zip(kinds, quadrants):
        r = rng.uniform(4.0, 6.0)
        cx = (q % 2) * half + rng.uniform(r + 1, half - r - 1)
        cy = (q // 2) * half + rng.uniform(r + 1, half - r - 1)
        _shape(d, kind, cx, cy, r, rng.uniform(0, 2 * math.pi), random_colour(rng))
    return np.asarray(img), sorted(kinds)


KIND_TASKS: dict[str, KindTask] = {t.name: t for t in [
    KindTask("size", "regression", ("radius",), _draw_size, "a shape's radius in pixels (3-13)"),
    KindTask("tags", "multilabel", _SHAPES, _draw_tags, "which of four shapes appear (1-3 an image)"),
]}


def generate_kind(task: str, n: int, seed: int = 0) -> tuple[np.ndarray, list, tuple[str, ...]]:
    """(images uint8 (n, 32, 32, 3), one raw target per image, the target or tag names). Sample i
    uses its own generator seeded by (seed, task, i), so a larger ``n`` extends a smaller one."""
    spec = KIND_TASKS[task]
    task_key = sum(ord(ch) * (i + 1) for i, ch in enumerate(task))
    images = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    raw = []
    for i in range(n):
        images[i], label = spec.draw(np.random.default_rng([seed, task_key, 7, i]))
        raw.append(label)
    return images, raw, spec.names
