"""Procedural image classification tasks for the offline demo zoo.

Seven families (shapes, textures, glyphs, counting, colour, orientation, position), each with a
*source* variant (used to pre-train the demo zoo) and a *target* variant with different classes (used
to rank the zoo). Every image is 32 x 32 RGB, drawn from a seeded generator: the same (task, n, seed)
always gives the same pixels, so datasets are fingerprinted by their parameters alone.

Related source and target variants share low-level structure (edges, frequencies, strokes), so a
model pre-trained on ``shapes-source`` should transfer better to ``shapes`` than one pre-trained on
``colour-source``: that is what makes the demo's ranking meaningful.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["TASKS", "TARGET_TASKS", "SOURCE_TASKS", "DemoTask", "generate", "GENERATOR_VERSION", "SIZE"]

SIZE = 32
# Bump when drawing changes: it is part of every demo dataset's fingerprint (and so of cache keys).
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class DemoTask:
    name: str
    classes: tuple[str, ...]
    draw: Callable[[np.random.Generator, str], np.ndarray]
    summary: str


def _background(rng: np.random.Generator) -> np.ndarray:
    base = rng.uniform(0, 70, size=3)
    noise = rng.normal(0, 12, size=(SIZE, SIZE, 1))
    return np.clip(base + noise, 0, 255)


def random_colour(rng: np.random.Generator, hue: float | None = None) -> tuple[int, int, int]:
    import colorsys

    h = rng.uniform() if hue is None else hue
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def canvas(rng):
    """A fresh image of the demo's random background, to draw on."""
    return Image.fromarray(_background(rng).astype(np.uint8))


def polygon_points(cx, cy, radius, sides, rotation):
    """The vertices of a regular ``sides``-gon around (cx, cy), turned by ``rotation`` radians."""
    return [(cx + radius * math.cos(rotation + 2 * math.pi * k / sides),
             cy + radius * math.sin(rotation + 2 * math.pi * k / sides)) for k in range(sides)]


def _draw_shape(rng, cls):
    img = canvas(rng)
    d = ImageDraw.Draw(img)
    r = rng.uniform(7, 12)
    cx, cy = rng.uniform(r + 1, SIZE - r - 1, size=2)
    rot = rng.uniform(0, 2 * math.pi)
    col = random_colour(rng)
    if cls == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
    elif cls == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=col, width=3)
    elif cls == "square":
        d.polygon(polygon_points(cx, cy, r, 4, rot), fill=col)
    elif cls == "diamond":
        pts = polygon_points(cx, cy, r, 4, rot)
        d.polygon([(cx + (x - cx) * 0.55, y) for x, y in pts], fill=col)
    elif cls == "triangle":
        d.polygon(polygon_points(cx, cy, r, 3, rot), fill=col)
    elif cls == "hexagon":
        d.polygon(polygon_points(cx, cy, r, 6, rot), fill=col)
    elif cls == "cross":
        w = r / 3
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=col)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=col)
    elif cls == "star":
        outer = polygon_points(cx, cy, r, 5, rot)
        inner = polygon_points(cx, cy, r * 0.4, 5, rot + math.pi / 5)
        d.polygon([p for pair in zip(outer, inner) for p in pair], fill=col)
    return np.asarray(img)


def _draw_texture(rng, cls):
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    period = rng.uniform(4, 8)
    phase = rng.uniform(0, 2 * math.pi)
    if cls == "hstripes":
        field = np.sin(2 * math.pi * yy / period + phase)
    elif cls == "vstripes":
        field = np.sin(2 * math.pi * xx / period + phase)
    elif cls == "diag":
        field = np.sin(2 * math.pi * (xx + yy) / (period * 1.4) + phase)
    elif cls == "checker":
        field = np.sign(np.sin(2 * math.pi * xx / period + phase) * np.sin(2 * math.pi * yy / period))
    elif cls == "grid":
        field = np.maximum(np.cos(2 * math.pi * xx / period + phase), np.cos(2 * math.pi * yy / period)) ** 8 * 2 - 1
    elif cls == "dots":
        field = (np.cos(2 * math.pi * xx / period + phase) * np.cos(2 * math.pi * yy / period)) ** 6 * 2 - 1
    elif cls == "waves":
        field = np.sin(2 * math.pi * yy / period + 2.5 * np.sin(2 * math.pi * xx / 16 + phase))
    else:  # "noise": smooth random blobs
        coarse = rng.normal(size=(5, 5))
        field = np.asarray(Image.fromarray(coarse.astype(np.float32)).resize((SIZE, SIZE), Image.BICUBIC))
        field = field / (np.abs(field).max() + 1e-9)
    a, b = np.array(random_colour(rng)), np.array(random_colour(rng)) * 0.3
    img = b + (a - b) * (field[..., None] + 1) / 2 + rng.normal(0, 10, size=(SIZE, SIZE, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


_FONT_CACHE: dict[int, ImageFont.ImageFont] = {}


def _font(size: int):
    if size not in _FONT_CACHE:
        try:
            _FONT_CACHE[size] = ImageFont.load_default(size=size)
        except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
            _FONT_CACHE[size] = ImageFont.load_default()
    return _FONT_CACHE[size]


def _draw_glyph(rng, cls):
    img = canvas(rng)
    d = ImageDraw.Draw(img)
    size = int(rng.integers(16, 24))
    font = _font(size)
    x0, y0, x1, y1 = d.textbbox((0, 0), cls, font=font)
    x = rng.uniform(-x0, max(-x0 + 0.5, SIZE - x1))
    y = rng.uniform(-y0, max(-y0 + 0.5, SIZE - y1))
    d.text((x, y), cls, fill=random_colour(rng), font=font, stroke_width=int(rng.integers(0, 2)))
    angle = rng.uniform(-15, 15)
    return np.asarray(img.rotate(angle, resample=Image.BILINEAR, fillcolor=tuple(np.asarray(img)[0, 0].tolist())))


def _draw_count(rng, cls, kind):
    img = canvas(rng)
    d = ImageDraw.Draw(img)
    count = int(cls)
    col = random_colour(rng)
    placed = []
    for _ in range(200):
        if len(placed) == count:
            break
        r = rng.uniform(2.0, 3.5)
        cx, cy = rng.uniform(r + 1, SIZE - r - 1, size=2)
        if all((cx - px) ** 2 + (cy - py) ** 2 > (r + pr + 2) ** 2 for px, py, pr in placed):
            placed.append((cx, cy, r))
    for cx, cy, r in placed:
        box = [cx - r, cy - r, cx + r, cy + r]
        (d.ellipse if kind == "dots" else d.rectangle)(box, fill=col)
    return np.asarray(img)


_HUES = {"red": 0.0, "orange": 0.08, "yellow": 0.16, "green": 0.33, "cyan": 0.5, "blue": 0.66, "purple": 0.8}


def _draw_colour_object(rng, cls):
    img = canvas(rng)
    d = ImageDraw.Draw(img)
    r = rng.uniform(6, 12)
    cx, cy = rng.uniform(r, SIZE - r, size=2)
    hue = (_HUES[cls] + rng.normal(0, 0.015)) % 1.0
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=random_colour(rng, hue))
    return np.asarray(img)


def _draw_colour_background(rng, cls):
    hue = (_HUES[cls] + rng.normal(0, 0.015)) % 1.0
    bg = np.array(random_colour(rng, hue), dtype=np.float64) * rng.uniform(0.5, 0.9)
    img = np.clip(bg + rng.normal(0, 10, size=(SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    pil = Image.fromarray(img)
    r = rng.uniform(4, 8)
    cx, cy = rng.uniform(r, SIZE - r, size=2)
    ImageDraw.Draw(pil).rectangle([cx - r, cy - r, cx + r, cy + r], fill=random_colour(rng))
    return np.asarray(pil)


def _draw_bar(rng, cls):
    img = canvas(rng)
    d = ImageDraw.Draw(img)
    angle = math.radians(float(cls) + rng.normal(0, 4))
    length = rng.uniform(9, 14)
    cx, cy = rng.uniform(12, 20, size=2)
    dx, dy = length * math.cos(angle), -length * math.sin(angle)
    d.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=random_colour(rng), width=int(rng.integers(2, 4)))
    return np.asarray(img)


def _draw_position(rng, cls):
    img = canvas(rng)
    d = ImageDraw.Draw(img)
    row, col = divmod(int(cls), 3)
    cell = SIZE / 3
    r = rng.uniform(2.5, 4.5)
    cx = (col + 0.5) * cell + rng.uniform(-2, 2)
    cy = (row + 0.5) * cell + rng.uniform(-2, 2)
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=random_colour(rng))
    return np.asarray(img)


def _task(name, classes, draw, summary):
    return DemoTask(name, tuple(classes), draw, summary)


TASKS: dict[str, DemoTask] = {t.name: t for t in [
    _task("shapes-source", ["circle", "square", "triangle", "cross"], _draw_shape, "filled shapes"),
    _task("shapes", ["ring", "diamond", "hexagon", "star"], _draw_shape, "other shapes"),
    _task("textures-source", ["hstripes", "vstripes", "checker", "dots"], _draw_texture, "periodic textures"),
    _task("textures", ["diag", "grid", "waves", "noise"], _draw_texture, "other textures"),
    _task("glyphs-source", list("ABCDEFGHJK"), _draw_glyph, "letters"),
    _task("glyphs", list("0123456789"), _draw_glyph, "digits"),
    _task("counting-source", ["1", "2", "3", "4"], lambda r, c: _draw_count(r, c, "dots"), "count dots"),
    _task("counting", ["2", "3", "4", "5", "6"], lambda r, c: _draw_count(r, c, "squares"), "count squares"),
    _task("colour-source", ["red", "yellow", "green", "cyan", "blue", "purple"], _draw_colour_object, "object hue"),
    _task("colour", ["red", "orange", "green", "blue", "purple"], _draw_colour_background, "background hue"),
    _task("orientation-source", ["0", "45", "90", "135"], _draw_bar, "bar angle"),
    _task("orientation", ["0", "30", "60", "90", "120", "150"], _draw_bar, "finer bar angle"),
    _task("position", [str(i) for i in range(9)], _draw_position, "which of 9 cells holds the dot"),
]}
SOURCE_TASKS = tuple(n for n in TASKS if n.endswith("-source"))
TARGET_TASKS = tuple(n for n in TASKS if not n.endswith("-source"))


def generate(task: str, n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(images uint8 (N, 32, 32, 3), labels int64 (N,), class names) for a demo task.

    Samples are interleaved by class; sample i of class c uses its own generator seeded by
    (seed, task, c, i), so a larger ``n_per_class`` extends a smaller one.
    """
    if task not in TASKS:
        raise KeyError(task)
    spec = TASKS[task]
    images = np.empty((n_per_class * len(spec.classes), SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.empty(len(images), dtype=np.int64)
    task_key = sum(ord(ch) * (i + 1) for i, ch in enumerate(task))
    k = 0
    for i in range(n_per_class):
        for c, name in enumerate(spec.classes):
            rng = np.random.default_rng([seed, task_key, c, i])
            images[k] = spec.draw(rng, name)
            labels[k] = c
            k += 1
    return images, labels, spec.classes
