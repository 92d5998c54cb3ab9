"""What VRRL's replay components need from the grounding task (GROUNDING_SPEC section 3).

- ``prefix_type(spec, turns)``: a stored prefix is ``"right"`` when the episode's committed point (the answer, else
  the last valid pointed point) is correct by the reward's rule, else ``"wrong"`` (also when there is no point).
- ``random_init_turn(spec, rng)``: VRRL's ``random_init`` roll-in, an injected first pointing turn (with a
  ``<think>``) at a random point ``min_px``..``max_px`` from the target point, inside the image and outside the
  target box (the roll-in exists to practise correcting a wrong look, so it never lands on the answer).

Distances. VRRL uses 100-180 px; ``init_distance_range`` keeps that from ``feedback.REFERENCE_SIDE`` (672 px) up and
scales it by ``longer side / 672`` below, the same rule as the crop side. The tiny preset (252 x 252) gets
``(38, 68)`` px: about 0.45-0.8 of its 84 px crop, so the first crop shows a neighbouring element, never the
target's centre, as VRRL's 100-180 px against a 200 px crop.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from vrrl_jax.tasks.grounding import feedback, parse, reward, scenes

INIT_DISTANCE_PX = (100, 180)
INIT_THINK = "I will start by looking at this part of the image."
_INIT_TRIES = 1000


def committed_point(turns: Sequence[str], point_format: str = parse.DEFAULT_POINT_FORMAT) -> tuple[int, int] | None:
  """The episode's answer if it has one, else its last valid pointed point, else None."""
  parsed = [parse.parse_turn(t, point_format) for t in reward.check_turns(turns)]
  for turn in parsed:
    if turn.is_answer and turn.point is not None:
      return turn.point
  pointed = [t.point for t in parsed if t.is_point and t.point is not None]
  return pointed[-1] if pointed else None


def prefix_type(spec, turns: Sequence[str], config: reward.RewardConfig | None = None) -> str:
  """``"right"`` or ``"wrong"`` by the committed point (see the module docstring)."""
  config = reward.RewardConfig() if config is None else config
  question = scenes.scene_question(spec)
  point = committed_point(turns, config.point_format)
  return "right" if reward.is_correct(point, question, config) else "wrong"


def init_distance_range(width: int, height: int) -> tuple[int, int]:
  """VRRL's 100-180 px, scaled down for images smaller than ``feedback.REFERENCE_SIDE``."""
  scale = min(1.0, max(width, height) / feedback.REFERENCE_SIDE)
  return round(INIT_DISTANCE_PX[0] * scale), round(INIT_DISTANCE_PX[1] * scale)


def random_init_point(
  spec, rng: np.random.Generator, min_px: float | None = None, max_px: float | None = None
) -> tuple[int, int]:
  """A random integer point ``min_px <= |p - t| <= max_px`` from the target point, in the image, off the box."""
  if not isinstance(rng, np.random.Generator):
    raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
  spec = scenes.parse_spec(spec)
  lo_default, hi_default = init_distance_range(*spec.size)
  lo = lo_default if min_px is None else float(min_px)
  hi = hi_default if max_px is None else float(max_px)
  if not 0 <= lo <= hi:
    raise ValueError(f"need 0 <= min_px <= max_px, got {lo}, {hi}")
  question = scenes.scene_question(spec)
  tx, ty = question.point
  x1, y1, x2, y2 = question.box
  for _ in range(_INIT_TRIES):
    angle = rng.uniform(0.0, 2 * math.pi)
    radius = rng.uniform(lo, hi)
    x, y = int(round(tx + radius * math.cos(angle))), int(round(ty + radius * math.sin(angle)))
    inside = 0 <= x < spec.width and 0 <= y < spec.height
    on_box = x1 <= x <= x2 and y1 <= y <= y2
    if inside and not on_box and lo <= math.hypot(x - tx, y - ty) <= hi:
      return x, y
  raise ValueError(f"no point {lo}-{hi} px from {question.point} lies in the image and off the box {question.box}")


def random_init_turn(
  spec,
  rng: np.random.Generator,
  min_px: float | None = None,
  max_px: float | None = None,
  point_format: str = parse.DEFAULT_POINT_FORMAT,
) -> str:
  """The injected first turn: ``<think>`` then a pointing call at ``random_init_point``. ``min_px``/``max_px``
  default to ``init_distance_range`` of the image."""
  x, y = random_init_point(spec, rng, min_px, max_px)
  return parse.format_turn(INIT_THINK, parse.format_call(x, y, point_format))
