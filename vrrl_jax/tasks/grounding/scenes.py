"""Grounding scenes: the spec, its layout (named element boxes), its pixels and its question.

A scene is described by a small frozen ``GroundingSpec`` (kind, style, seed, width, height, question index) that
round-trips through a plain JSON-able dict; everything else is regenerated from it:

- ``render_scene(spec) -> (image, elements)``: an RGB Pillow image and ``{name: (x1, y1, x2, y2)}``, boxes inclusive
  in image pixels. Names: ``cell:<row>:<column>``, ``row:<row>``, ``col:<column>``, ``table`` for tables;
  ``bar:<label>``, ``label:<label>``, ``value:<label>`` (styles with value labels), ``tick:<value>``, ``plot`` for
  charts.
- ``scene_question(spec) -> Question``: the text (e.g. "Point to the cell in row 'Q3' and column 'Sales'."), the
  target element, its box and the target point (the box centre, ``((x1 + x2) // 2, (y1 + y2) // 2)``).

Sizes are multiples of 28 (``PATCH_MULTIPLE``) so that the Qwen2.5-VL processor does not resize them when they lie
within its pixel budget: then the pixels the model sees are the rendered pixels and coordinates need no scaling
(``coords.processed_size`` tells whether a processor setting would resize, ``coords.scale_box`` scales when it
does). The presets: ``"small"`` 252 x 252 is the tiny CPU model's whole image budget (``max_pixels = 252**2``,
9 x 9 merged tokens); ``"large"`` 896 x 672 is a multiple of both 28 and 32, so neither Qwen2.5-VL nor Qwen3-VL
resizes it. OOD sizes change the aspect ratio.

Fonts: Pillow's built-in font (``ImageFont.load_default(size=...)``) at the style's preferred size, shrunk until
every text fits its cell or bar slot and never below ``styles.MIN_FONT_PX`` (10 px); a scene that cannot fit raises
ValueError. Shapes are exact-colour rectangles; text is anti-aliased.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import numbers
from typing import Any, Mapping

from PIL import Image, ImageDraw, ImageFont

from vrrl_jax.tasks.grounding import content, styles

Box = tuple[int, int, int, int]
PATCH_MULTIPLE = 28
MIN_SIDE, MAX_SIDE = 112, 2240
SIZE_PRESETS = {"small": ((252, 252),), "large": ((896, 672),)}
OOD_SIZE_PRESETS = {"small": ((280, 224), (224, 280)), "large": ((1008, 756), (672, 896))}
SPEC_KEYS = ("kind", "style", "seed", "width", "height", "question")


@dataclasses.dataclass(frozen=True)
class GroundingSpec:
  """One scene and one question about it. Build with ``parse_spec`` (which validates)."""

  kind: str
  style: str
  seed: int
  width: int
  height: int
  question: int = 0

  def to_dict(self) -> dict[str, Any]:
    return {k: getattr(self, k) for k in SPEC_KEYS}

  @property
  def size(self) -> tuple[int, int]:
    return self.width, self.height

  @property
  def diagonal(self) -> float:
    return math.hypot(self.width, self.height)

  @property
  def question_id(self) -> str:
    """The example's identity (what the replay buffer caps entries per)."""
    return spec_hash(self)


@dataclasses.dataclass(frozen=True)
class Question:
  family: str
  text: str
  target: str
  box: Box
  point: tuple[int, int]


def _check_int(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(f"spec {name} must be an int, got {value!r}")
  return int(value)


def parse_spec(spec: Mapping[str, Any] | GroundingSpec) -> GroundingSpec:
  """Validates a spec (a ``GroundingSpec`` or its ``to_dict()``); raises ValueError naming the problem."""
  if isinstance(spec, GroundingSpec):
    raw = spec.to_dict()
  elif isinstance(spec, Mapping):
    raw = dict(spec)
  else:
    raise ValueError(f"grounding spec must be a mapping or GroundingSpec, got {type(spec).__name__}")
  missing = [k for k in SPEC_KEYS if k not in raw]
  unknown = sorted(set(raw) - set(SPEC_KEYS))
  if missing or unknown:
    raise ValueError(f"grounding spec: missing keys {missing}, unknown keys {unknown}; expected {list(SPEC_KEYS)}")
  kind = content.check_kind(raw["kind"])
  styles.get_style(raw["style"])
  seed = _check_int("seed", raw["seed"])
  if not 0 <= seed < 2**63:
    raise ValueError(f"spec seed must be in [0, 2**63), got {seed}")
  width, height = _check_int("width", raw["width"]), _check_int("height", raw["height"])
  for name, side in (("width", width), ("height", height)):
    if side % PATCH_MULTIPLE or not MIN_SIDE <= side <= MAX_SIDE:
      raise ValueError(f"spec {name}={side} must be a multiple of {PATCH_MULTIPLE} in [{MIN_SIDE}, {MAX_SIDE}]")
  question = _check_int("question", raw["question"])
  n_questions = len(_templates(kind, raw["style"], seed))
  if not 0 <= question < n_questions:
    raise ValueError(f"spec question={question} is out of range: this scene has {n_questions} questions")
  return GroundingSpec(kind, raw["style"], seed, width, height, question)


def spec_hash(spec: Mapping[str, Any] | GroundingSpec) -> str:
  """sha256 of the spec's canonical JSON: the identity of one (scene, question) example."""
  text = json.dumps(parse_spec(spec).to_dict(), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()


@functools.lru_cache(maxsize=4096)
def _data(kind: str, style: str, seed: int) -> content.SceneData:
  return content.scene_data(kind, style, seed)


@functools.lru_cache(maxsize=4096)
def _templates(kind: str, style: str, seed: int) -> tuple[content.QuestionTemplate, ...]:
  return tuple(content.question_templates(_data(kind, style, seed)))


def scene_data(spec) -> content.SceneData:
  spec = parse_spec(spec)
  return _data(spec.kind, spec.style, spec.seed)


def scene_hash(spec) -> str:
  """The content hash (``content.scene_hash``): equal for specs that show the same table or chart."""
  return content.scene_hash(scene_data(spec))


def questions(spec) -> tuple[content.QuestionTemplate, ...]:
  """Every question the spec's scene can ask; ``spec.question`` indexes this."""
  spec = parse_spec(spec)
  return _templates(spec.kind, spec.style, spec.seed)


# ----------------------------------------------------------------------------------------------------------------
# Layout: a list of drawing operations plus the element boxes, computed once per spec and cached; rendering
# replays the operations, so the boxes are exactly where the pixels are.


@dataclasses.dataclass(frozen=True)
class _Rect:
  box: Box
  fill: styles.RGB


@dataclasses.dataclass(frozen=True)
class _Text:
  xy: tuple[int, int]
  text: str
  size: int
  anchor: str
  fill: styles.RGB
  bold: bool


@dataclasses.dataclass(frozen=True)
class Layout:
  """``elements``: name -> inclusive box. ``font_px``: the font size used (>= MIN_FONT_PX)."""

  elements: tuple[tuple[str, Box], ...]
  ops: tuple
  font_px: int
  background: styles.RGB


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
  return ImageFont.load_default(size=size)


# Bold is faux bold: the text drawn twice, one pixel apart horizontally (a stroke smears small glyphs).
def _text_box(xy: tuple[int, int], text: str, size: int, anchor: str, bold: bool) -> Box:
  left, top, right, bottom = _font(size).getbbox(text, anchor=anchor)
  return (xy[0] + left, xy[1] + top, xy[0] + right - 1 + int(bold), xy[1] + bottom - 1)


def _text_wh(text: str, size: int, bold: bool = False) -> tuple[int, int]:
  left, top, right, bottom = _font(size).getbbox(text)
  return right - left + int(bold), bottom - top


class _Builder:
  def __init__(self, style: styles.Style, font_px: int):
    self.style, self.font_px = style, font_px
    self.ops: list = []
    self.elements: dict[str, Box] = {}

  def rect(self, box: Box, fill: styles.RGB, name: str | None = None):
    x1, y1, x2, y2 = (int(v) for v in box)
    if x2 >= x1 and y2 >= y1:
      self.ops.append(_Rect((x1, y1, x2, y2), fill))
    if name is not None:
      self.elements[name] = (x1, y1, x2, y2)

  def text(self, xy, text: str, anchor: str = "mm", name: str | None = None, bold: bool = False, fill=None):
    xy = (int(round(xy[0])), int(round(xy[1])))
    self.ops.append(_Text(xy, text, self.font_px, anchor, self.style.text if fill is None else fill, bold))
    if name is not None:
      self.elements[name] = _text_box(xy, text, self.font_px, anchor, bold)


def _line_px(spec: GroundingSpec, style: styles.Style) -> int:
  return max(1, round(min(spec.width, spec.height) * style.line_frac))


def _table(spec: GroundingSpec, data: content.SceneData, style: styles.Style, fs: int) -> _Builder | None:
  w, h = spec.width, spec.height
  lw = _line_px(spec, style)
  margin = max(2, round(0.03 * min(w, h)))
  n_r, n_c = len(data.labels) + 1, len(data.columns) + 1
  cw, rh = (w - 2 * margin) // n_c, (h - 2 * margin) // n_r
  pad = lw + 2
  bold = style.bold_headers
  texts = [(t, bold) for t in (*data.labels, *data.columns)] + [(str(v), False) for row in data.values for v in row]
  for text, b in texts:
    tw, th = _text_wh(text, fs, b)
    if tw > cw - 2 * pad or th > rh - 2 * pad:
      return None
  gx, gy = (w - cw * n_c) // 2, (h - rh * n_r) // 2
  b = _Builder(style, fs)

  def cell(i: int, j: int) -> Box:
    return (gx + j * cw, gy + i * rh, gx + (j + 1) * cw - 1, gy + (i + 1) * rh - 1)

  b.rect((0, 0, w - 1, h - 1), style.background)
  b.rect((gx, gy, gx + n_c * cw - 1, gy + n_r * rh - 1), style.background, name="table")
  for i in range(n_r):
    for j in range(n_c):
      if i == 0 or j == 0:
        fill = style.header_fill
      elif style.stripe_fill is not None and i % 2 == 0:
        fill = style.stripe_fill
      else:
        continue
      b.rect(cell(i, j), fill)
  x_end, y_end = gx + n_c * cw - 1, gy + n_r * rh - 1
  for i in range(n_r + 1):
    y = min(gy + i * rh - lw // 2, y_end - lw + 1)
    b.rect((gx, max(gy, y), x_end, max(gy, y) + lw - 1), style.grid)
  for j in range(n_c + 1):
    x = min(gx + j * cw - lw // 2, x_end - lw + 1)
    b.rect((max(gx, x), gy, max(gx, x) + lw - 1, y_end), style.grid)
  for j, column in enumerate(data.columns, start=1):
    box = cell(0, j)
    b.elements[f"col:{column}"] = box
    b.text(((box[0] + box[2] + 1) / 2, (box[1] + box[3] + 1) / 2), column, bold=bold)
  for i, row in enumerate(data.labels, start=1):
    box = cell(i, 0)
    b.elements[f"row:{row}"] = box
    b.text(((box[0] + box[2] + 1) / 2, (box[1] + box[3] + 1) / 2), row, bold=bold)
    for j, column in enumerate(data.columns, start=1):
      box = cell(i, j)
      b.elements[content.table_cell(row, column)] = box
      b.text(((box[0] + box[2] + 1) / 2, (box[1] + box[3] + 1) / 2), str(data.values[i - 1][j - 1]))
  return b


def _nice_max(vmax: int) -> tuple[int, int]:
  """(axis maximum, tick step): the smallest step from 10/20/25/50 giving at most 5 intervals."""
  for step in (10, 20, 25, 50):
    top = step * math.ceil(vmax / step)
    if top / step <= 5:
      return top, step
  return 100 * math.ceil(vmax / 100), 100


def _chart(spec: GroundingSpec, data: content.SceneData, style: styles.Style, fs: int) -> _Builder | None:
  w, h = spec.width, spec.height
  lw = _line_px(spec, style)
  margin = max(3, round(0.03 * min(w, h)))
  gap = max(2, fs // 4)
  tick_len = max(3, 2 * lw)
  bold = style.bold_headers
  vmax, step = _nice_max(max(data.values))
  ticks = list(range(0, vmax + 1, step))
  th = _text_wh("0123456789", fs)[1]
  lab_w = max(_text_wh(lab, fs, bold)[0] for lab in data.labels)
  lab_h = max(_text_wh(lab, fs, bold)[1] for lab in data.labels)
  val_w = max(_text_wh(str(v), fs)[0] for v in data.values) if style.value_labels else 0
  tick_w = max(_text_wh(str(t), fs)[0] for t in ticks)
  n = len(data.values)
  vertical = data.kind == content.BARS
  if vertical:
    left = margin + tick_w + gap + tick_len + lw
    top = margin + (th + gap if style.value_labels else th // 2 + 1)
    bottom = margin + lab_h + gap + tick_len + lw
    px0, px1, py0, py1 = left, w - margin - 1, top, h - bottom
    slot = (px1 - px0 + 1) / n
    if max(lab_w, val_w) > slot - 2 or py1 - py0 < 4 * th:
      return None
  else:
    left = margin + lab_w + gap + tick_len + lw
    right = margin + max(val_w + gap, tick_w // 2 + 1)
    bottom = margin + th + gap + tick_len + lw
    px0, px1, py0, py1 = left, w - right - 1, margin, h - bottom
    slot = (py1 - py0 + 1) / n
    if max(lab_h, th) > slot - 2 or px1 - px0 < 4 * tick_w:
      return None
  b = _Builder(style, fs)
  b.rect((0, 0, w - 1, h - 1), style.background)
  b.elements["plot"] = (px0, py0, px1, py1 - 1)
  extent = (py1 - py0) if vertical else (px1 - px0)
  for t in ticks:
    offset = round(t / vmax * extent)
    if vertical:
      y = py1 - offset
      if style.gridlines and t > 0:
        b.rect((px0, y, px1, y + lw - 1), style.grid)
      b.rect((px0 - lw - tick_len, y, px0 - lw - 1, y + lw - 1), style.axis)
      b.text((px0 - lw - tick_len - gap, y + lw / 2), str(t), anchor="rm", name=f"tick:{t}")
    else:
      x = px0 + offset
      if style.gridlines and t > 0:
        b.rect((x, py0, x + lw - 1, py1 - 1), style.grid)
      b.rect((x, py1 + lw, x + lw - 1, py1 + lw + tick_len - 1), style.axis)
      b.text((x + lw / 2, py1 + lw + tick_len + gap), str(t), anchor="mt", name=f"tick:{t}")
  for i, (label, value) in enumerate(zip(data.labels, data.values)):
    color = style.bar_colors[i % len(style.bar_colors)]
    length = max(2, round(value / vmax * extent))
    if vertical:
      cx = px0 + (i + 0.5) * slot
      bar_w = max(4, int(slot * 0.62))
      x1 = int(round(cx - bar_w / 2))
      box = (x1, py1 - length, x1 + bar_w - 1, py1 - 1)
      label_xy, label_anchor = (cx, py1 + lw + tick_len + gap), "mt"
      value_xy, value_anchor = (cx, box[1] - gap), "mb"
    else:
      cy = py0 + (i + 0.5) * slot
      bar_h = max(4, int(slot * 0.62))
      y1 = int(round(cy - bar_h / 2))
      box = (px0, y1, px0 + length - 1, y1 + bar_h - 1)
      label_xy, label_anchor = (px0 - lw - tick_len - gap, cy), "rm"
      value_xy, value_anchor = (box[2] + gap, cy), "lm"
    if style.bar_outline is not None:
      b.rect(box, style.bar_outline)
      b.rect((box[0] + 1, box[1] + 1, box[2] - 1, box[3] - 1), color)
    else:
      b.rect(box, color)
    b.elements[content.bar_name(label)] = box
    b.text(label_xy, label, anchor=label_anchor, name=f"label:{label}", bold=bold)
    if style.value_labels:
      b.text(value_xy, str(value), anchor=value_anchor, name=f"value:{label}")
  # Axes last, so bars never cover them: left of the plot and below it.
  b.rect((px0 - lw, py0, px0 - 1, py1 + lw - 1), style.axis)
  b.rect((px0 - lw, py1, px1, py1 + lw - 1), style.axis)
  return b


@functools.lru_cache(maxsize=4096)
def _layout(spec: GroundingSpec) -> Layout:
  style = styles.get_style(spec.style)
  data = _data(spec.kind, spec.style, spec.seed)
  preferred = max(styles.MIN_FONT_PX, round(min(spec.width, spec.height) * style.font_frac))
  compose = _table if spec.kind == content.TABLE else _chart
  for fs in range(preferred, styles.MIN_FONT_PX - 1, -1):
    built = compose(spec, data, style, fs)
    if built is not None:
      return Layout(tuple(built.elements.items()), tuple(built.ops), fs, style.background)
  raise ValueError(
    f"scene {spec.to_dict()} does not fit its {spec.width}x{spec.height} image with fonts >= {styles.MIN_FONT_PX} px"
  )


def layout(spec) -> Layout:
  """The scene's element boxes and drawing operations, without pixels (cached per spec)."""
  return _layout(parse_spec(spec))


def elements(spec) -> dict[str, Box]:
  return dict(layout(spec).elements)


def render_scene(spec) -> tuple[Image.Image, dict[str, Box]]:
  """The scene image (RGB, ``spec.width x spec.height``) and its element boxes (inclusive pixels)."""
  lay = layout(spec)
  spec = parse_spec(spec)
  image = Image.new("RGB", (spec.width, spec.height), lay.background)
  draw = ImageDraw.Draw(image)
  for op in lay.ops:
    if isinstance(op, _Rect):
      draw.rectangle(op.box, fill=op.fill)
    else:
      for dx in range(1 + int(op.bold)):
        draw.text((op.xy[0] + dx, op.xy[1]), op.text, font=_font(op.size), fill=op.fill, anchor=op.anchor)
  return image, dict(lay.elements)


def box_center(box: Box) -> tuple[int, int]:
  return (box[0] + box[2]) // 2, (box[1] + box[3]) // 2


@functools.lru_cache(maxsize=4096)
def _question(spec: GroundingSpec) -> Question:
  template = _templates(spec.kind, spec.style, spec.seed)[spec.question]
  box = dict(_layout(spec).elements)[template.target]
  return Question(template.family, template.text, template.target, box, box_center(box))


def scene_question(spec) -> Question:
  """The spec's question with its target box and point (the box centre), in image pixels."""
  return _question(parse_spec(spec))


def element_at(spec, x: int, y: int, prefix: str = "") -> str | None:
  """The name of the element whose box holds (x, y) (among names starting with ``prefix``), or None."""
  for name, (x1, y1, x2, y2) in layout(spec).elements:
    if name.startswith(prefix) and name not in ("table", "plot") and x1 <= x <= x2 and y1 <= y <= y2:
      return name
  return None
