"""Coordinates between the rendered image and the image the model sees (GROUNDING_SPEC section 1).

The model names pixels of the image *after* the processor's resize. Scenes are rendered at multiples of 28
inside the processor's pixel budget, where Qwen2.5-VL's ``smart_resize`` is the identity, so the two agree and
nothing here is needed. For any other size (or another processor setting) ``processed_size`` gives the size the
model sees, with the rounding of ``vrrl_jax.data.processor.smart_resize``, and ``scale_point``/``scale_box`` carry
ground truth across (either direction: pass the sizes the other way round).

Scaling is by pixel centres: a pixel ``x`` of a ``W``-wide image covers ``[x, x + 1)``, its centre ``x + 0.5`` maps to
``(x + 0.5) * W' / W``, and the point is that pixel of the other image (clipped to it). A box keeps covering the same
area: ``x1' = floor(x1 * W' / W)``, ``x2' = ceil((x2 + 1) * W' / W) - 1``.
"""

from __future__ import annotations

import math

from vrrl_jax.data import processor as processor_lib


def _check_size(name: str, size) -> tuple[int, int]:
  try:
    w, h = (int(v) for v in size)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be (width, height), got {size!r}") from None
  if w < 1 or h < 1:
    raise ValueError(f"{name} must be positive, got {size!r}")
  return w, h


def processed_size(
  width: int, height: int, image_config: processor_lib.ImageProcessorConfig | None = None
) -> tuple[int, int]:
  """(width, height) of the image the model sees; default config: Qwen2.5-VL's hub preprocessor."""
  cfg = processor_lib.ImageProcessorConfig.qwen2_5_vl() if image_config is None else image_config
  w, h = _check_size("size", (width, height))
  h_bar, w_bar = processor_lib.smart_resize(h, w, cfg.factor, cfg.min_pixels, cfg.max_pixels)
  return w_bar, h_bar


def is_unresized(width: int, height: int, image_config: processor_lib.ImageProcessorConfig | None = None) -> bool:
  """True when the processor keeps this size, so rendered pixels are the pixels the model sees."""
  return processed_size(width, height, image_config) == (width, height)


def scale_point(point, from_size, to_size) -> tuple[int, int]:
  (x, y), (fw, fh), (tw, th) = point, _check_size("from_size", from_size), _check_size("to_size", to_size)
  sx = math.floor((x + 0.5) * tw / fw)
  sy = math.floor((y + 0.5) * th / fh)
  return min(max(sx, 0), tw - 1), min(max(sy, 0), th - 1)


def scale_box(box, from_size, to_size) -> tuple[int, int, int, int]:
  (x1, y1, x2, y2), (fw, fh), (tw, th) = box, _check_size("from_size", from_size), _check_size("to_size", to_size)
  if x2 < x1 or y2 < y1:
    raise ValueError(f"box must have x1 <= x2 and y1 <= y2, got {box!r}")
  nx1, ny1 = math.floor(x1 * tw / fw), math.floor(y1 * th / fh)
  nx2, ny2 = math.ceil((x2 + 1) * tw / fw) - 1, math.ceil((y2 + 1) * th / fh) - 1
  return max(nx1, 0), max(ny1, 0), min(nx2, tw - 1), min(ny2, th - 1)
