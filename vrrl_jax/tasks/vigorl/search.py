"""Visual search scenes (ViGoRL's V*Bench substitute, GROUNDING_SPEC section 4): a large cluttered canvas of small
coloured shapes with exactly one target, too small to read at the processed resolution, so answering needs a zoom.

Questions (``QUESTIONS``): ``"color"`` names the target's shape ("What colour is the star?": the only star on the
canvas; answer its colour name), ``"shape"`` names its colour ("What shape is the purple object?": the only purple
object; answer its shape name), ``"locate"`` names both ("Point to the red star.": the only red star, distractors
may share one of the two; answer a point in its box).

The logical layout (shapes, colour names, centres as fractions of the width and height, sizes as fractions of
``sqrt(width * height)``) comes from the seed and the question alone, so ``Scene.content`` is the same for every
style and size and a content hash keeps train and eval disjoint. Sizes are relative to ``sqrt(width * height)``
because the processor shrinks an image to a pixel budget: an object then looks the same size at every aspect ratio.
The layout is valid (non-overlapping, inside the canvas) for every aspect ratio up to ``MAX_ASPECT``.

Scale: on the "small" 1008 px canvas objects are 18-24 px, ~5-6 px once the tiny model's processor shrinks the
image to ~252 px (a blob whose shape is unreadable); a zoom on an 84 px processed window (336 original px) shown at
252 px makes them 14-18 px, clearly readable. "large" (2240 px, processed to ~1008 px) keeps the proportions.

Shapes are drawn through a binary mask in the style's exact colour (no anti-aliasing), so each object's box is the
exact bounding box of its pixels. Background texture and clutter are grey (never a palette colour) and are not
objects: they never look like a target.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from vrrl_jax.tasks.vigorl.scene import POINT, STRING, Box, Element, Scene

RGB = tuple[int, int, int]
KIND = "search"
QUESTIONS = ("color", "shape", "locate")
COLORS = ("red", "orange", "yellow", "green", "blue", "purple")
SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
SIZES = {
  "small": {"id": ((1008, 1008),), "ood": ((1176, 840), (840, 1176))},
  "large": {"id": ((2240, 2240),), "ood": ((2632, 1876), (1876, 2632))},
}
PATCH_MULTIPLE = 28
MIN_SIDE, MAX_SIDE = 336, 3360
MAX_ASPECT = 1.5  # the layout stays valid for width/height in [1 / MAX_ASPECT, MAX_ASPECT]

# Logical layout, in fractions. Object sizes are fractions of sqrt(width * height); the gap between objects and the
# gap to the border are fractions too (6 px at 1008).
SIZE_RANGE = (0.018, 0.024)
N_DISTRACTORS = (20, 40)
GAP = 0.006
_SALT_LAYOUT, _SALT_RENDER = 0x5EA5C4, 0x5EA5C5


@dataclasses.dataclass(frozen=True)
class Style:
  """How a scene looks. ``palette``: the RGB of each name in ``COLORS`` (OOD styles use other shades of the same
  colours). ``outline``: shapes drawn as outlines (width a fraction of the object size) instead of filled.
  ``noise``: amplitude of grey per-pixel noise. ``grid``: faint grid lines, every 1/``grid`` of the canvas (0: none).
  ``strokes``: number of grey clutter strokes (short lines and dots) per 1000 px x 1000 px."""

  name: str
  ood: bool
  background: RGB
  palette: tuple[RGB, ...]
  outline: bool = False
  noise: int = 0
  grid: int = 0
  grid_color: RGB = (0, 0, 0)
  strokes: int = 0
  stroke_grey: tuple[int, int] = (150, 210)

  def __post_init__(self):
    if len(self.palette) != len(COLORS):
      raise ValueError(f"style {self.name!r}: palette needs {len(COLORS)} colours, got {len(self.palette)}")
    # Colours stay apart from each other and from the (grey) background after a downscale blurs them.
    for i, a in enumerate(self.palette):
      if _dist(a, self.background) < 120:
        raise ValueError(f"style {self.name!r}: {COLORS[i]} {a} is too close to the background")
      for j in range(i):
        if _dist(a, self.palette[j]) < 70:
          raise ValueError(f"style {self.name!r}: {COLORS[i]} and {COLORS[j]} are too close")

  def rgb(self, color: str) -> RGB:
    """The exact RGB this style draws a colour name in."""
    return self.palette[COLORS.index(color)]


def _dist(a: RGB, b: RGB) -> float:
  return math.dist(a, b)


# Palettes, in the order of COLORS: red, orange, yellow, green, blue, purple.
_STANDARD = ((220, 20, 20), (255, 140, 0), (240, 220, 0), (20, 160, 40), (25, 70, 230), (145, 35, 200))
_BRIGHT = ((255, 70, 70), (255, 160, 40), (255, 240, 60), (60, 220, 90), (70, 130, 255), (190, 90, 255))
_DEEP = ((180, 0, 0), (230, 110, 0), (215, 185, 0), (0, 125, 30), (0, 40, 190), (110, 0, 160))
_MUTED = ((200, 55, 55), (235, 125, 35), (225, 205, 45), (55, 150, 80), (55, 90, 205), (140, 65, 185))

PLAIN = Style(name="plain", ood=False, background=(250, 250, 248), palette=_STANDARD)
GRID = Style(name="grid", ood=False, background=(243, 246, 250), palette=_STANDARD, grid=36, grid_color=(214, 220, 230))
NOISY = Style(name="noisy", ood=False, background=(234, 230, 222), palette=_STANDARD, noise=14, strokes=40)
DARK = Style(name="dark", ood=True, background=(24, 26, 34), palette=_BRIGHT, noise=6, stroke_grey=(50, 80), strokes=40)
OUTLINE = Style(name="outline", ood=True, background=(252, 252, 252), palette=_DEEP, outline=True)
BUSY = Style(name="busy", ood=True, background=(238, 238, 238), palette=_MUTED, noise=8, strokes=700)

STYLES: dict[str, Style] = {s.name: s for s in (PLAIN, GRID, NOISY, DARK, OUTLINE, BUSY)}
ID_STYLES = tuple(name for name, s in STYLES.items() if not s.ood)
OOD_STYLES = tuple(name for name, s in STYLES.items() if s.ood)


def get_style(name: str) -> Style:
  if not isinstance(name, str) or name not in STYLES:
    raise ValueError(f"unknown search style {name!r}; choose one of {sorted(STYLES)}")
  return STYLES[name]


# ----------------------------------------------------------------------------------------------------------------
# Logical layout: what is where, in fractions, from (seed, question) only.


@dataclasses.dataclass(frozen=True)
class Item:
  """One object of the layout: centre (x, y) as fractions of the width and height; size as a fraction of
  sqrt(width * height)."""

  color: str
  shape: str
  x: float
  y: float
  size: float

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Layout:
  question: str  # a name in QUESTIONS
  text: str  # the question as asked
  answer: str
  target: Item
  distractors: tuple[Item, ...]

  def content(self) -> str:
    """Canonical JSON of everything logical: style- and size-free."""
    data = {
      "kind": KIND,
      "question": self.question,
      "text": self.text,
      "answer": self.answer,
      "target": self.target.to_dict(),
      "distractors": [d.to_dict() for d in self.distractors],
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def question_text(question: str, color: str, shape: str) -> str:
  if question == "color":
    return f"What colour is the {shape}?"
  if question == "shape":
    return f"What shape is the {color} object?"
  return f"Point to the {color} {shape}."


def _separated(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
  """Whether two objects (x, y, size) keep ``GAP`` apart at every aspect ratio up to MAX_ASPECT: in pixels over
  sqrt(w * h), a horizontal distance in fractions is scaled by sqrt(w / h) >= 1 / sqrt(MAX_ASPECT), a vertical one
  likewise, so a Chebyshev distance of sqrt(MAX_ASPECT) * (half sizes + GAP) suffices."""
  need = math.sqrt(MAX_ASPECT) * ((a[2] + b[2]) / 2 + GAP)
  return max(abs(a[0] - b[0]), abs(a[1] - b[1])) >= need


def layout(seed: int, question: str) -> Layout:
  """The logical scene for (seed, question), without pixels; raises ValueError on a bad question or seed."""
  return _layout(_check_seed(seed), _check_question(question))


@functools.lru_cache(maxsize=4096)
def _layout(seed: int, question: str) -> Layout:
  rng = np.random.default_rng([seed, QUESTIONS.index(question), _SALT_LAYOUT])
  k = math.sqrt(MAX_ASPECT)

  def size() -> float:
    return round(float(rng.uniform(*SIZE_RANGE)), 4)

  color, shape = COLORS[rng.integers(len(COLORS))], SHAPES[rng.integers(len(SHAPES))]
  s = size()
  lo = 1.5 * s * k  # the target's edge is at least its size from the border
  target = Item(color, shape, round(float(rng.uniform(lo, 1 - lo)), 3), round(float(rng.uniform(lo, 1 - lo)), 3), s)
  if question == "color":  # the only object of its shape
    pairs = [(c, sh) for c in COLORS for sh in SHAPES if sh != shape]
  elif question == "shape":  # the only object of its colour
    pairs = [(c, sh) for c in COLORS for sh in SHAPES if c != color]
  else:  # the only one of its colour and shape
    pairs = [(c, sh) for c in COLORS for sh in SHAPES if (c, sh) != (color, shape)]
  n = int(rng.integers(N_DISTRACTORS[0], N_DISTRACTORS[1] + 1))
  placed = [(target.x, target.y, target.size)]
  distractors = []
  for _ in range(200 * n):
    if len(distractors) == n:
      break
    s = size()
    lo = (s / 2 + GAP) * k
    cand = (round(float(rng.uniform(lo, 1 - lo)), 3), round(float(rng.uniform(lo, 1 - lo)), 3), s)
    if all(_separated(cand, p) for p in placed):
      c, sh = pairs[rng.integers(len(pairs))]
      placed.append(cand)
      distractors.append(Item(c, sh, *cand))
  if len(distractors) < N_DISTRACTORS[0]:  # not seen in practice: the canvas is ~10% full
    raise ValueError(f"search scene seed={seed} question={question!r}: placed only {len(distractors)} distractors")
  answer = {"color": color, "shape": shape, "locate": ""}[question]
  return Layout(question, question_text(question, color, shape), answer, target, tuple(distractors))


# ----------------------------------------------------------------------------------------------------------------
# Drawing.


def _shape_mask(shape: str, d: int, outline: int) -> Image.Image:
  """A binary (0/255) mask of size (d, d) with the shape filling it. ``outline`` > 0: only its border, that many
  px wide (the filled shape minus its erosion: Pillow's wide polygon outlines leave gaps at sharp corners)."""
  mask = Image.new("L", (d, d), 0)
  draw = ImageDraw.Draw(mask)
  m = d - 1  # last pixel
  c = m / 2
  if shape == "circle":
    draw.ellipse((0, 0, m, m), fill=255)
  else:
    if shape == "square":
      inset = round(0.07 * d)
      points = [(inset, inset), (m - inset, inset), (m - inset, m - inset), (inset, m - inset)]
    elif shape == "triangle":
      points = [(c, 0), (m, m), (0, m)]
    elif shape == "diamond":
      points = [(c, 0), (m, c), (c, m), (0, c)]
    elif shape == "cross":
      a, b = round(0.32 * m), round(0.68 * m)
      points = [(a, 0), (b, 0), (b, a), (m, a), (m, b), (b, b), (b, m), (a, m), (a, b), (0, b), (0, a), (a, a)]
    elif shape == "star":
      # A five-pointed star, stretched to fill the square (its natural box is wider than tall).
      raw = []
      for i in range(10):
        r = 1.0 if i % 2 == 0 else 0.45
        t = -math.pi / 2 + i * math.pi / 5
        raw.append((r * math.cos(t), r * math.sin(t)))
      x0, x1 = min(p[0] for p in raw), max(p[0] for p in raw)
      y0, y1 = min(p[1] for p in raw), max(p[1] for p in raw)
      points = [((px - x0) / (x1 - x0) * m, (py - y0) / (y1 - y0) * m) for px, py in raw]
    else:
      raise ValueError(f"unknown shape {shape!r}")
    draw.polygon([(round(px), round(py)) for px, py in points], fill=255, outline=255)
  if outline:
    # Pad before eroding so the canvas border does not count as outside.
    padded = Image.new("L", (d + 2, d + 2), 0)
    padded.paste(mask, (1, 1))
    inner = padded.filter(ImageFilter.MinFilter(2 * outline + 1)).crop((1, 1, d + 1, d + 1))
    mask = ImageChops.subtract(mask, inner)
  return mask


@functools.lru_cache(maxsize=1024)
def _mask_and_box(shape: str, d: int, outline: int) -> tuple[Image.Image, Box]:
  mask = _shape_mask(shape, d, outline)
  x1, y1, x2, y2 = mask.getbbox()
  return mask, (x1, y1, x2 - 1, y2 - 1)


def _background(style: Style, width: int, height: int, rng: np.random.Generator) -> Image.Image:
  """The style's background: flat colour, grey per-pixel noise, faint grid lines and grey clutter strokes."""
  if style.noise:
    base = np.asarray(style.background, dtype=np.int16)
    noise = rng.integers(-style.noise, style.noise + 1, size=(height, width, 1), dtype=np.int16)
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
  else:
    image = Image.new("RGB", (width, height), style.background)
  draw = ImageDraw.Draw(image)
  scale = math.sqrt(width * height) / 1008
  if style.grid:
    for i in range(1, style.grid):
      x, y = round(i * width / style.grid), round(i * height / style.grid)
      draw.line((x, 0, x, height - 1), fill=style.grid_color, width=1)
      draw.line((0, y, width - 1, y), fill=style.grid_color, width=1)
  n = round(style.strokes * width * height / 1e6)
  if n:
    xs, ys = rng.uniform(0, width, n), rng.uniform(0, height, n)
    angles, lengths = rng.uniform(0, math.pi, n), rng.uniform(4, 30, n) * scale
    greys = rng.integers(style.stroke_grey[0], style.stroke_grey[1] + 1, n)
    widths = np.maximum(1, np.round(rng.uniform(0.6, 2.2, n) * scale)).astype(int)
    dots = rng.random(n) < 0.3
    for x, y, a, ln, g, w, dot in zip(xs, ys, angles, lengths, greys, widths, dots):
      fill = (int(g),) * 3
      if dot:
        r = w
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
      else:
        dx, dy = math.cos(a) * ln / 2, math.sin(a) * ln / 2
        draw.line((x - dx, y - dy, x + dx, y + dy), fill=fill, width=int(w))
  return image


def _check_seed(seed: Any) -> int:
  if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
    raise ValueError(f"search scene seed must be an int in [0, 2**63), got {seed!r}")
  return int(seed)


def _check_question(question: Any) -> str:
  if not isinstance(question, str) or question not in QUESTIONS:
    raise ValueError(f"unknown search question {question!r}; choose one of {QUESTIONS}")
  return question


def _check_size(width: Any, height: Any) -> tuple[int, int]:
  for name, side in (("width", width), ("height", height)):
    if isinstance(side, bool) or not isinstance(side, numbers.Integral):
      raise ValueError(f"search scene {name} must be an int, got {side!r}")
    if side % PATCH_MULTIPLE or not MIN_SIDE <= side <= MAX_SIDE:
      raise ValueError(f"search scene {name}={side} must be a multiple of {PATCH_MULTIPLE} in [{MIN_SIDE}, {MAX_SIDE}]")
  if max(width / height, height / width) > MAX_ASPECT + 1e-9:
    raise ValueError(f"search scene size {width}x{height}: aspect ratio above {MAX_ASPECT}")
  return int(width), int(height)


def scene(style: str, seed: int, width: int, height: int, question: str) -> Scene:
  """The scene for these arguments (deterministic: equal arguments give identical pixels). Raises ValueError on
  an unknown style or question, a bad seed, or a size that is not a multiple of 28 within bounds and aspect."""
  get_style(style)
  seed, question = _check_seed(seed), _check_question(question)
  width, height = _check_size(width, height)
  return _scene(style, seed, width, height, question)


@functools.lru_cache(maxsize=32)  # a large scene is ~15 MB of pixels
def _scene(style_name: str, seed: int, width: int, height: int, question: str) -> Scene:
  style = STYLES[style_name]
  lay = _layout(seed, question)
  rng = np.random.default_rng([seed, QUESTIONS.index(question), list(STYLES).index(style_name), width, height])
  image = _background(style, width, height, rng)
  unit = math.sqrt(width * height)
  boxes = []
  for item in (lay.target, *lay.distractors):
    d = max(5, round(item.size * unit))
    outline = max(2, round(0.14 * d)) if style.outline else 0
    mask, (bx1, by1, bx2, by2) = _mask_and_box(item.shape, d, outline)
    x0, y0 = round(item.x * width) - d // 2, round(item.y * height) - d // 2
    image.paste(style.rgb(item.color), (x0, y0, x0 + d, y0 + d), mask)
    boxes.append((x0 + bx1, y0 + by1, x0 + bx2, y0 + by2))
  t = lay.target
  target = Element(f"the {t.color} {t.shape}", boxes[0])
  elements = tuple(Element(f"a {d.color} {d.shape}", box) for d, box in zip(lay.distractors, boxes[1:]))
  answer_type = POINT if question == "locate" else STRING
  return Scene(image, lay.text, answer_type, lay.answer, target.box, target, elements, lay.content())
