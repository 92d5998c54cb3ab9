"""ViGoRL's zoom crop (GROUNDING_SPEC section 2): the window around a point, an optional dot, the resize.

The model names points in the image it sees (after the processor's resize, ``view`` size). The window is ViGoRL's
``crop_window`` in those coordinates (clipped at the borders, not shifted inward; never empty), cut from the
*original* first image at the same place (scaled when the original is larger, so a zoom shows detail the view
lost; with original == view it is exactly upstream's cut). The dot, when on, is drawn on the cut before the resize:
a filled red circle of radius 7 with a white outline of width 2, in the cut's pixels. Then the cut is resized to
``crop_size`` x ``crop_size`` rounded to the processor's multiple (512 -> 504 for Qwen2.5-VL), bicubic.

A point outside the view gives a clipped window that may lie outside the image; Pillow fills such a cut with black,
as upstream's ``Image.crop`` does.
"""

from __future__ import annotations

import math
import numbers

from PIL import Image, ImageDraw

from vrrl_jax.tasks.grounding.feedback import crop_window

DOT_RADIUS = 7
DOT_OUTLINE = 2
DOT_FILL = (255, 0, 0)
DOT_OUTLINE_COLOR = (255, 255, 255)


def _int(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(f"{name} must be an int, got {value!r}")
  return int(value)


def rounded_crop_size(crop_size: int, multiple: int) -> int:
  """``crop_size`` rounded to the nearest multiple of the processor's factor (at least one multiple)."""
  crop_size, multiple = _int("crop_size", crop_size), _int("multiple", multiple)
  if crop_size < 1 or multiple < 1:
    raise ValueError(f"crop_size and multiple must be >= 1, got {crop_size}, {multiple}")
  return max(multiple, multiple * round(crop_size / multiple))


def original_window(
  view_size: tuple[int, int], original_size: tuple[int, int], x: int, y: int, offset: int
) -> tuple[int, int, int, int]:
  """The view-pixel window of ``crop_window`` carried to original pixels (left/top floored, right/bottom ceiled, so
  the cut covers at least the view window)."""
  (vw, vh), (ow, oh) = view_size, original_size
  left, top, right, bottom = crop_window(vw, vh, x, y, offset)
  sx, sy = ow / vw, oh / vh
  return math.floor(left * sx), math.floor(top * sy), math.ceil(right * sx), math.ceil(bottom * sy)


def zoom_crop(
  original: Image.Image,
  view_size: tuple[int, int],
  point: tuple[int, int],
  *,
  offset: int,
  crop_size: int,
  multiple: int,
  dot: bool,
) -> Image.Image:
  """The observation image for a ``search_coordinate`` call at ``point`` (view pixels)."""
  x, y = (_int("x", point[0]), _int("y", point[1]))
  offset = _int("offset", offset)
  if offset < 1:
    raise ValueError(f"offset must be >= 1, got {offset}")
  window = original_window(view_size, original.size, x, y, offset)
  cut = original.convert("RGB").crop(window)
  if dot:
    sx, sy = original.size[0] / view_size[0], original.size[1] / view_size[1]
    # The view pixel's centre in original pixel indices: exactly (x - left, y - top) when original == view.
    cx, cy = (x + 0.5) * sx - 0.5 - window[0], (y + 0.5) * sy - 0.5 - window[1]
    r = DOT_RADIUS
    ImageDraw.Draw(cut).ellipse(
      (cx - r, cy - r, cx + r, cy + r), fill=DOT_FILL, outline=DOT_OUTLINE_COLOR, width=DOT_OUTLINE
    )
  side = rounded_crop_size(crop_size, multiple)
  return cut.resize((side, side), Image.Resampling.BICUBIC)
