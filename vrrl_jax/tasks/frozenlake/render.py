"""Pillow renderer for FrozenLake maps and feedback routes (VRRL_SPEC section 1, step 3).

``render_map`` draws the grid: ice, holes, the elf on the start cell and the gift on the goal cell.
``render_feedback`` adds the proposed route: a polyline from the start cell centre with one vertex per
action (``maps.walk`` positions; an off-grid move puts its vertex at the centre of the phantom cell
just outside the grid, and the canvas grows by one whole cell on that side), a star at the last vertex,
no cut at holes or at the goal, and the elf left drawn at the start. With no actions the feedback image
is the map plus the star on the start cell, as upstream's matplotlib renderer draws it.

Drawing is exact-colour (no anti-aliasing) so every palette colour marks one kind of thing; tests and
the data pipeline locate things by colour and by the pixel geometry of ``cell_box``/``cell_center``.
Two presets differ in palette, sprites, line style and cell size, so OOD renders shift style as well as
grid size (upstream's L7 images were raw 64 px/cell gym renders, L3-L6 about 119 px/cell):

- ``"default"``: 112 px/cell (close to upstream's 119 and a multiple of Qwen2.5-VL's 28 px merged patch,
  so an L x L map is exactly 4L x 4L merged 28 px patches, no resize), a gnome-like elf and a bowed gift drawn
  with polygons, round holes, solid red route with a black outline, red star.
- ``"ood"``: 64 px/cell, pixel-art elf and gift, square holes on white ice, dashed blue route, yellow star.

Speed (median of 200 level-7 feedback renders on one core, ``python -m vrrl_jax.tasks.frozenlake bench
--level 7 --style ...``): 0.9-1.1 ms (default) and 0.5-0.8 ms (ood) per image across runs on a shared
2-core machine, well under the 5 ms budget, so there is no image cache (only the per-style sprite tiles).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

from PIL import Image, ImageDraw

from vrrl_jax.tasks.frozenlake import maps

RGB = tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class RenderStyle:
  """Everything that decides how an image looks. Frozen, so it can key the sprite caches.

  Colours are RGB tuples; each sprite/hole/route colour must be distinct from the others so a pixel's
  colour says what it belongs to. ``dash`` is ``(on_px, off_px)`` along the route, or None for solid.
  """

  name: str
  cell_px: int
  ice: RGB
  ice_spot: RGB  # small highlight on every ice cell (also under sprites and around holes)
  grid: RGB
  grid_px: int  # grid line width on each side of a cell edge
  outside: RGB  # canvas beyond the grid (phantom cells of off-grid moves)
  hole: RGB
  hole_rim: RGB
  hole_shape: str  # "round" | "square"
  sprite_kind: str  # "vector" (polygon elf/gift) | "pixel" (pixel-art bitmaps)
  elf_hat: RGB
  elf_face: RGB
  elf_body: RGB
  elf_boots: RGB
  gift_box: RGB
  gift_ribbon: RGB
  line: RGB
  line_px: int
  line_outline: RGB | None
  line_outline_px: int  # extra width on each side of the route line
  dash: tuple[int, int] | None
  star: RGB
  star_outline: RGB
  star_radius: float  # outer radius as a fraction of cell_px

  def __post_init__(self):
    if not isinstance(self.cell_px, int) or self.cell_px < 16:
      raise ValueError(f"cell_px must be an int >= 16, got {self.cell_px!r}")
    if self.hole_shape not in ("round", "square"):
      raise ValueError(f"hole_shape must be 'round' or 'square', got {self.hole_shape!r}")
    if self.sprite_kind not in ("vector", "pixel"):
      raise ValueError(f"sprite_kind must be 'vector' or 'pixel', got {self.sprite_kind!r}")
    for name in _COLOR_FIELDS:
      v = getattr(self, name)
      if v is None and name == "line_outline":
        continue
      if not (isinstance(v, tuple) and len(v) == 3 and all(isinstance(x, int) and 0 <= x <= 255 for x in v)):
        raise ValueError(f"{name} must be an (r, g, b) tuple of ints in 0..255, got {v!r}")
    if self.dash is not None and (len(self.dash) != 2 or min(self.dash) < 1):
      raise ValueError(f"dash must be None or (on_px, off_px) with both >= 1, got {self.dash!r}")
    if not 0 < self.star_radius <= 0.5:
      raise ValueError(f"star_radius must be in (0, 0.5], got {self.star_radius}")
    if self.line_px < 1 or self.grid_px < 0 or self.line_outline_px < 0:
      raise ValueError("line_px must be >= 1 and grid_px, line_outline_px >= 0")

  @property
  def elf_colors(self) -> tuple[RGB, ...]:
    return (self.elf_hat, self.elf_face, self.elf_body, self.elf_boots)

  @property
  def gift_colors(self) -> tuple[RGB, ...]:
    return (self.gift_box, self.gift_ribbon)

  @property
  def hole_colors(self) -> tuple[RGB, ...]:
    return (self.hole, self.hole_rim)


_COLOR_FIELDS = (
  "ice",
  "ice_spot",
  "grid",
  "outside",
  "hole",
  "hole_rim",
  "elf_hat",
  "elf_face",
  "elf_body",
  "elf_boots",
  "gift_box",
  "gift_ribbon",
  "line",
  "line_outline",
  "star",
  "star_outline",
)

DEFAULT_STYLE = RenderStyle(
  name="default",
  cell_px=112,
  ice=(205, 232, 246),
  ice_spot=(236, 247, 253),
  grid=(140, 182, 209),
  grid_px=1,
  outside=(255, 255, 255),
  hole=(22, 50, 79),
  hole_rim=(79, 124, 163),
  hole_shape="round",
  sprite_kind="vector",
  elf_hat=(30, 123, 52),
  elf_face=(246, 200, 159),
  elf_body=(58, 123, 213),
  elf_boots=(92, 58, 33),
  gift_box=(244, 197, 66),
  gift_ribbon=(194, 24, 91),
  line=(225, 6, 0),
  line_px=8,
  line_outline=(0, 0, 0),
  line_outline_px=2,
  dash=None,
  star=(220, 38, 38),
  star_outline=(1, 1, 1),
  star_radius=0.3,
)

OOD_STYLE = RenderStyle(
  name="ood",
  cell_px=64,
  ice=(244, 246, 250),
  ice_spot=(214, 226, 240),
  grid=(120, 130, 150),
  grid_px=1,
  outside=(55, 65, 81),
  hole=(43, 45, 66),
  hole_rim=(141, 153, 174),
  hole_shape="square",
  sprite_kind="pixel",
  elf_hat=(123, 44, 191),
  elf_face=(255, 218, 185),
  elf_body=(255, 127, 17),
  elf_boots=(60, 30, 90),
  gift_box=(0, 180, 216),
  gift_ribbon=(255, 214, 10),
  line=(29, 78, 216),
  line_px=5,
  line_outline=(255, 255, 255),
  line_outline_px=1,
  dash=(12, 7),
  star=(250, 204, 21),
  star_outline=(31, 41, 55),
  star_radius=0.34,
)

# The default look at 28 px per cell: one Qwen2.5-VL merged patch (2 x 2 patches of 14 px) per cell, so each
# image token sees exactly one cell. For small from-scratch models, which cannot learn in a CPU budget to
# locate things that straddle token boundaries (``configs/frozenlake_small_cpu.py``).
COMPACT_STYLE = dataclasses.replace(DEFAULT_STYLE, name="compact", cell_px=28, line_px=3, line_outline_px=1)
# The same for Qwen3-VL's 32 px merged patches (2 x 2 patches of 16 px).
COMPACT32_STYLE = dataclasses.replace(COMPACT_STYLE, name="compact32", cell_px=32)

STYLES: dict[str, RenderStyle] = {
  "default": DEFAULT_STYLE,
  "ood": OOD_STYLE,
  "compact": COMPACT_STYLE,
  "compact32": COMPACT32_STYLE,
}


def get_style(style: str | RenderStyle) -> RenderStyle:
  if isinstance(style, RenderStyle):
    return style
  if style not in STYLES:
    raise ValueError(f"unknown render style {style!r}; choose one of {sorted(STYLES)} or pass a RenderStyle")
  return STYLES[style]


# ----------------------------------------------------------------------------------------------------
# Pixel geometry. Offsets are whole cells of margin (top, left) added for off-grid vertices.


def cell_box(r: int, c: int, style: str | RenderStyle, offset: tuple[int, int] = (0, 0)) -> tuple[int, int, int, int]:
  """Half-open pixel box ``(x0, y0, x1, y1)`` of grid cell (r, c); r, c may be -1 or L (phantom cells)."""
  s = get_style(style).cell_px
  x0, y0 = (c + offset[1]) * s, (r + offset[0]) * s
  return x0, y0, x0 + s, y0 + s


def cell_center(r: int, c: int, style: str | RenderStyle, offset: tuple[int, int] = (0, 0)) -> tuple[int, int]:
  """The pixel the route passes through in cell (r, c): ``(x0 + cell_px // 2, y0 + cell_px // 2)``."""
  s = get_style(style).cell_px
  x0, y0, _, _ = cell_box(r, c, style, offset)
  return x0 + s // 2, y0 + s // 2


def canvas_margins(spec: maps.MapSpec, actions: Sequence[str]) -> tuple[int, int, int, int]:
  """Whole cells of margin (top, left, bottom, right), 1 where the route visits a phantom cell on that side."""
  level = spec.level
  positions = maps.walk(spec, actions).positions
  return (
    int(any(r < 0 for r, _ in positions)),
    int(any(c < 0 for _, c in positions)),
    int(any(r >= level for r, _ in positions)),
    int(any(c >= level for _, c in positions)),
  )


def route_vertices(spec: maps.MapSpec, actions: Sequence[str], style: str | RenderStyle) -> list[tuple[int, int]]:
  """Pixel vertices of the route on the feedback canvas: the start centre, then one per action."""
  top, left, _, _ = canvas_margins(spec, actions)
  cells = [spec.start_rc, *maps.walk(spec, actions).positions]
  return [cell_center(r, c, style, (top, left)) for r, c in cells]


# ----------------------------------------------------------------------------------------------------
# Tiles and sprites, drawn once per style and pasted.

# Pixel-art sprites for sprite_kind="pixel": H hat, F face, B body, K boots/eyes, X box, R ribbon.
_PIXEL_ELF = (
  "....HH....",
  "...HHHH...",
  "..HHHHHH..",
  "FFFFFFFFFF",
  ".FFKFFKFF.",
  "..FFFFFF..",
  "...BBBB...",
  "..BBBBBB..",
  ".FBBBBBBF.",
  "..KK..KK..",
)
_PIXEL_GIFT = (
  "..R....R..",
  "...R..R...",
  "....RR....",
  "XXXXRRXXXX",
  "XXXXRRXXXX",
  "RRRRRRRRRR",
  "XXXXRRXXXX",
  "XXXXRRXXXX",
  "XXXXRRXXXX",
  "XXXXRRXXXX",
)


def _ice_tile(style: RenderStyle) -> Image.Image:
  s = style.cell_px
  tile = Image.new("RGB", (s, s), style.ice)
  draw = ImageDraw.Draw(tile)
  # Two frost streaks in the top-left corner, clear of the centre where sprites and routes go.
  draw.line([(s * 0.1, s * 0.24), (s * 0.24, s * 0.1)], fill=style.ice_spot, width=max(2, s // 28))
  draw.line([(s * 0.1, s * 0.36), (s * 0.36, s * 0.1)], fill=style.ice_spot, width=max(1, s // 40))
  if style.grid_px:
    draw.rectangle([0, 0, s - 1, s - 1], outline=style.grid, width=style.grid_px)
  return tile


def _hole_tile(style: RenderStyle) -> Image.Image:
  s = style.cell_px
  tile = _ice_tile(style)
  draw = ImageDraw.Draw(tile)
  rim, inner = round(s * 0.1), round(s * 0.17)
  if style.hole_shape == "round":
    draw.ellipse([rim, rim + s * 0.06, s - 1 - rim, s - 1 - rim], fill=style.hole_rim)
    draw.ellipse([inner, inner + s * 0.06, s - 1 - inner, s - 1 - inner], fill=style.hole)
  else:
    draw.rectangle([rim, rim, s - 1 - rim, s - 1 - rim], fill=style.hole_rim)
    draw.rectangle([inner, inner, s - 1 - inner, s - 1 - inner], fill=style.hole)
  return tile


def _pixel_sprite(style: RenderStyle, bitmap: Sequence[str], colors: dict[str, RGB]) -> Image.Image:
  small = Image.new("RGBA", (len(bitmap[0]), len(bitmap)), (0, 0, 0, 0))
  for y, row in enumerate(bitmap):
    for x, ch in enumerate(row):
      if ch != ".":
        small.putpixel((x, y), (*colors[ch], 255))
  size = round(style.cell_px * 0.78)
  big = Image.new("RGBA", (style.cell_px, style.cell_px), (0, 0, 0, 0))
  pad = (style.cell_px - size) // 2
  big.paste(small.resize((size, size), Image.NEAREST), (pad, pad))
  return big


def _vector_elf(style: RenderStyle) -> Image.Image:
  s = style.cell_px
  img = Image.new("RGBA", (s, s), (0, 0, 0, 0))
  d = ImageDraw.Draw(img)

  def px(*xy):  # fractions of the cell -> pixels
    return [(x * s, y * s) for x, y in zip(xy[::2], xy[1::2])]

  d.polygon(px(0.33, 0.88, 0.67, 0.88, 0.61, 0.52, 0.39, 0.52), fill=(*style.elf_body, 255))  # tunic
  d.rectangle(px(0.33, 0.86, 0.45, 0.93), fill=(*style.elf_boots, 255))
  d.rectangle(px(0.55, 0.86, 0.67, 0.93), fill=(*style.elf_boots, 255))
  d.polygon(px(0.31, 0.36, 0.38, 0.42, 0.35, 0.47), fill=(*style.elf_face, 255))  # pointy ears
  d.polygon(px(0.69, 0.36, 0.62, 0.42, 0.65, 0.47), fill=(*style.elf_face, 255))
  d.ellipse(px(0.37, 0.3, 0.63, 0.56), fill=(*style.elf_face, 255))  # face
  d.polygon(px(0.34, 0.36, 0.66, 0.36, 0.5, 0.06), fill=(*style.elf_hat, 255))  # hat
  d.ellipse(px(0.43, 0.43, 0.47, 0.47), fill=(*style.elf_boots, 255))  # eyes
  d.ellipse(px(0.53, 0.43, 0.57, 0.47), fill=(*style.elf_boots, 255))
  return img


def _vector_gift(style: RenderStyle) -> Image.Image:
  s = style.cell_px
  img = Image.new("RGBA", (s, s), (0, 0, 0, 0))
  d = ImageDraw.Draw(img)

  def px(*xy):
    return [(x * s, y * s) for x, y in zip(xy[::2], xy[1::2])]

  box, ribbon = (*style.gift_box, 255), (*style.gift_ribbon, 255)
  d.rectangle(px(0.24, 0.42, 0.76, 0.88), fill=box)
  d.rectangle(px(0.2, 0.34, 0.8, 0.44), fill=box)  # lid
  d.rectangle(px(0.45, 0.34, 0.55, 0.88), fill=ribbon)
  d.rectangle(px(0.24, 0.6, 0.76, 0.68), fill=ribbon)
  d.polygon(px(0.5, 0.34, 0.3, 0.18, 0.34, 0.34), fill=ribbon)  # bow
  d.polygon(px(0.5, 0.34, 0.7, 0.18, 0.66, 0.34), fill=ribbon)
  return img


@functools.lru_cache(maxsize=16)
def _tiles(style: RenderStyle) -> dict[str, Image.Image]:
  if style.sprite_kind == "pixel":
    elf = _pixel_sprite(
      style, _PIXEL_ELF, {"H": style.elf_hat, "F": style.elf_face, "B": style.elf_body, "K": style.elf_boots}
    )
    gift = _pixel_sprite(style, _PIXEL_GIFT, {"X": style.gift_box, "R": style.gift_ribbon})
  else:
    elf, gift = _vector_elf(style), _vector_gift(style)
  ice = _ice_tile(style)
  start, goal = ice.copy(), ice.copy()
  start.paste(elf, (0, 0), elf)
  goal.paste(gift, (0, 0), gift)
  return {"F": ice, "H": _hole_tile(style), "S": start, "G": goal}


# ----------------------------------------------------------------------------------------------------
# Drawing.


def _draw_grid(canvas: Image.Image, spec: maps.MapSpec, style: RenderStyle, offset: tuple[int, int]) -> None:
  tiles = _tiles(style)
  for r, row in enumerate(spec.layout):
    for c, ch in enumerate(row):
      x0, y0, _, _ = cell_box(r, c, style, offset)
      canvas.paste(tiles[ch], (x0, y0))
  if style.grid_px:  # outer frame as wide as the inner lines (2 * grid_px)
    x0, y0, _, _ = cell_box(0, 0, style, offset)
    _, _, x1, y1 = cell_box(spec.level - 1, spec.level - 1, style, offset)
    ImageDraw.Draw(canvas).rectangle([x0, y0, x1 - 1, y1 - 1], outline=style.grid, width=2 * style.grid_px)


def render_map(spec, style: str | RenderStyle = "default") -> Image.Image:
  """The map image shown with the first prompt: ``L * cell_px`` square, RGB."""
  spec, style = maps.parse_spec(spec), get_style(style)
  size = spec.level * style.cell_px
  canvas = Image.new("RGB", (size, size), style.outside)
  _draw_grid(canvas, spec, style, (0, 0))
  return canvas


def _dash_pieces(vertices: Sequence[tuple[int, int]], on: int, off: int) -> list[tuple[tuple[float, float], ...]]:
  """Splits the polyline into the 'on' stretches of a dash pattern whose phase runs along its length."""
  pieces, phase = [], 0.0  # phase: distance into the current on+off period
  period = on + off
  for (x0, y0), (x1, y1) in zip(vertices, vertices[1:]):
    length = math.hypot(x1 - x0, y1 - y0)
    t = 0.0
    while t < length:
      if phase < on:
        step = min(on - phase, length - t)
        a, b = t / length, (t + step) / length
        pieces.append(((x0 + (x1 - x0) * a, y0 + (y1 - y0) * a), (x0 + (x1 - x0) * b, y0 + (y1 - y0) * b)))
      else:
        step = min(period - phase, length - t)
      t += step
      phase = (phase + step) % period
  return pieces


def _stroke(draw: ImageDraw.ImageDraw, pieces, color: RGB, width: int, dots) -> None:
  lo, hi = (width - 1) // 2, width // 2  # the rows/columns PIL's line of this width covers around y/x
  for a, b in pieces:  # PIL's thick-line offset depends on direction: draw each piece one fixed way
    draw.line(sorted([a, b]), fill=color, width=width)
  for x, y in dots:  # round caps and joins, flush with the line
    x, y = round(x), round(y)
    draw.ellipse([x - lo, y - lo, x + hi, y + hi], fill=color)


def _star(draw: ImageDraw.ImageDraw, center: tuple[int, int], style: RenderStyle) -> None:
  cx, cy = center
  outer = style.star_radius * style.cell_px
  inner = outer * 0.45
  points = []
  for k in range(10):
    rad = outer if k % 2 == 0 else inner
    ang = -math.pi / 2 + k * math.pi / 5
    points.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
  draw.polygon(points, fill=style.star, outline=style.star_outline, width=max(1, style.cell_px // 40))


def render_feedback(spec, actions: Sequence[str], style: str | RenderStyle = "default") -> Image.Image:
  """The map with ``actions`` drawn as a route (see module docstring). Unknown action names raise
  ``KeyError`` from ``maps.walk``; ``parse.parse_turn`` never produces them."""
  spec, style = maps.parse_spec(spec), get_style(style)
  actions = tuple(actions)
  top, left, bottom, right = canvas_margins(spec, actions)
  s = style.cell_px
  canvas = Image.new("RGB", ((spec.level + left + right) * s, (spec.level + top + bottom) * s), style.outside)
  _draw_grid(canvas, spec, style, (top, left))
  vertices = route_vertices(spec, actions, style)
  draw = ImageDraw.Draw(canvas)
  if len(vertices) > 1:
    if style.dash is None:
      pieces, dots = list(zip(vertices, vertices[1:])), vertices
    else:  # butt-ended dashes (round caps would close the gaps), rounded only at corners inside a dash
      pieces = _dash_pieces(vertices, *style.dash)
      ends = [p for piece in pieces for p in piece]
      dots = [v for v in vertices[1:-1] if sum(math.dist(v, p) < 1e-6 for p in ends) >= 2]
    if style.line_outline is not None and style.line_outline_px:
      _stroke(draw, pieces, style.line_outline, style.line_px + 2 * style.line_outline_px, dots)
    _stroke(draw, pieces, style.line, style.line_px, dots)
  _star(draw, vertices[-1], style)
  return canvas
