"""The feedback image of a pointing turn (GROUNDING_SPEC section 3) and ViGoRL's crop window (section 2).

VRRL: the point is drawn on the whole image (a red dot of radius 5 at half opacity), then a square of side
``crop_side`` centred on the point is cut out, clipped at the image borders (not shifted inward, not resized).
The crop is ``crop_window(W, H, x, y, crop_side // 2)``, so an even side gives exactly ``crop_side`` pixels away
from the borders; an odd side is refused.

Crop side. VRRL uses 200 px; we keep it for images whose longer side is at least ``REFERENCE_SIDE`` (672, the
large presets). Smaller images get ``scaled_crop_side``: 200 * longer / 672, rounded to a multiple of 28, at least
56. Why: (1) the crop then covers the same fraction of the scene (about 30% of the longer side), so it shows one
cell or bar plus its neighbours at every size; a fixed 200 px crop of a 252 px image would show almost all of it
and teach nothing; (2) a multiple of 28 is left unresized by the Qwen2.5-VL processor, so an unclipped crop is
exactly whole merged tokens (84 px = 3 x 3 tokens for the tiny model at 252 px); (3) 56 px is the processor's
smallest side (2 x 2 tokens). A crop clipped at a corner can be smaller than that and is then upscaled by the
processor, as any small image is. The 200 px default itself is resized by the processor to 196 px.
"""

from __future__ import annotations

import numbers

from PIL import Image, ImageDraw

DOT_RADIUS = 5
DOT_COLOR = (255, 0, 0)
DOT_ALPHA = 128  # half-transparent: the element under the dot stays readable
DEFAULT_CROP_SIDE = 200
REFERENCE_SIDE = 672
MIN_CROP_SIDE = 56


def _int(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(f"{name} must be an int, got {value!r}")
  return int(value)


def crop_window(width: int, height: int, x: int, y: int, offset: int) -> tuple[int, int, int, int]:
  """ViGoRL's window ``(left, top, right, bottom)`` (right/bottom exclusive, as ``Image.crop`` takes it):
  ``max(0, x - offset)``, ``max(0, y - offset)``, ``min(W, x + offset)``, ``min(H, y + offset)``, clipped, not
  shifted; when ``right <= left`` then ``right = left + 1`` (same for bottom), so the window is never empty."""
  width, height = _int("width", width), _int("height", height)
  x, y, offset = _int("x", x), _int("y", y), _int("offset", offset)
  if width < 1 or height < 1 or offset < 0:
    raise ValueError(f"need width, height >= 1 and offset >= 0, got {width}, {height}, {offset}")
  left, top = max(0, x - offset), max(0, y - offset)
  right, bottom = min(width, x + offset), min(height, y + offset)
  if right <= left:
    right = left + 1
  if bottom <= top:
    bottom = top + 1
  return left, top, right, bottom


def scaled_crop_side(width: int, height: int, base: int = DEFAULT_CROP_SIDE, reference: int = REFERENCE_SIDE) -> int:
  """The recommended crop side for an image (see the module docstring): ``base`` from ``reference`` px up."""
  longer = max(_int("width", width), _int("height", height))
  if longer >= reference:
    return base
  return max(MIN_CROP_SIDE, 28 * round(base * longer / reference / 28))


def draw_dot(
  image: Image.Image, x: int, y: int, radius: int = DOT_RADIUS, color=DOT_COLOR, alpha: int = DOT_ALPHA
) -> Image.Image:
  """A copy of ``image`` (RGB) with a filled circle of ``radius`` at (x, y), blended at ``alpha``/255."""
  x, y, radius = _int("x", x), _int("y", y), _int("radius", radius)
  if not 0 <= alpha <= 255 or radius < 0:
    raise ValueError(f"need 0 <= alpha <= 255 and radius >= 0, got {alpha}, {radius}")
  base = image.convert("RGBA")
  overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
  ImageDraw.Draw(overlay).ellipse((x - radius, y - radius, x + radius, y + radius), fill=(*color, alpha))
  return Image.alpha_composite(base, overlay).convert("RGB")


def crop_box(width: int, height: int, x: int, y: int, crop_side: int) -> tuple[int, int, int, int]:
  """VRRL's square crop around (x, y) as a ``crop_window``; ``crop_side`` must be even and >= 2."""
  crop_side = _int("crop_side", crop_side)
  if crop_side < 2 or crop_side % 2:
    raise ValueError(f"crop_side must be an even int >= 2, got {crop_side}")
  return crop_window(width, height, x, y, crop_side // 2)


def feedback_image(
  image: Image.Image, x: int, y: int, crop_side: int = DEFAULT_CROP_SIDE, dot_radius: int = DOT_RADIUS
) -> Image.Image:
  """The dot drawn on the whole image, then the crop around it. The point must be inside the image."""
  width, height = image.size
  if not (0 <= x < width and 0 <= y < height):
    raise ValueError(f"point ({x}, {y}) is outside the {width}x{height} image")
  return draw_dot(image, x, y, dot_radius).crop(crop_box(width, height, x, y, crop_side))
