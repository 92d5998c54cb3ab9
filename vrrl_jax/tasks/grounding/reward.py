"""The grounding reward: FrozenLake's structure (a format gate, a correct-answer value minus a step cost, else a
reflection score from per-turn progress) on pointing episodes. VRRL did not release this reward
(GROUNDING_SPEC section 3); this is our definition, written out so docs can quote it.

Notation. ``turns``: the episode's assistant texts, each parsed by ``parse.parse_turn`` with the configured
``point_format``. Scene: ``W x H`` pixels, diagonal ``D = sqrt(W^2 + H^2)``, target box ``B = (x1, y1, x2, y2)``
(inclusive) and target point ``t`` = the box centre ``((x1 + x2) // 2, (y1 + y2) // 2)``. For a point ``p``,
``d(p) = min(1, |p - t| / D)`` (Euclidean, normalised by the diagonal, capped at 1). A point is *in the image* when
``0 <= x < W`` and ``0 <= y < H``.

- The *answer* is the point of the first answer turn, if its body parses (``<answer>(x, y)</answer>``, integers).
- ``correct`` = 1 when there is an answer and it is correct by ``correct_rule``: ``"box"`` (the default):
  ``x1 <= x <= x2 and y1 <= y <= y2``; ``"point"``: ``|p - t| <= tolerance_px``; ``"box_or_point"``: either. The
  default is the box because table rows can be thinner than VRRL's 20 px tolerance, which would then accept the
  neighbouring row; ``"point"`` with ``tolerance_px = 20`` is VRRL's rule.
- ``format`` = ``FORMAT_SCORE`` (0.1) when all of: (a) there are at least ``min_points + 1`` turns; (b) every turn is
  ``well_formed`` (``parse``: starts with ``<think>``, one think block, then exactly one action with a valid
  integer coordinate and nothing else); (c) the last turn is an answer and every other turn is a pointing turn;
  (d) every pointed point is in the image; (e) no two pointing turns name the same point. Else 0. The answer itself
  may lie anywhere (outside the image it is just wrong).
- Points for progress: ``P = (p_1, ..., p_k)``: the points of the pointing turns before the answer that are valid
  and in the image, in order, followed by the answer if there is one. ``reflection_raw = sum_i r_i`` over
  consecutive pairs with ``delta_i = d(p_{i-1}) - d(p_i)`` (positive when the point moved closer),
  ``r_i = delta_i`` if ``delta_i >= 0`` else ``lambda_deg * delta_i``.
  ``reflection = clip(reflection_raw, reflect_lower_clip, 1)`` when ``k >= 2``, else 0. (With ``lambda_deg = 1``
  the sum telescopes to ``d(p_1) - d(p_k)``.)
- ``overall``:
  - ``format == 0``: 0;
  - ``correct``: ``correct_value - step_cost * (n_points - min_points)``, where ``n_points`` counts the pointing
    turns (so the shortest clean episode, ``min_points`` looks and the answer, gets ``correct_value``);
  - otherwise: ``format + reflect_weight * reflection``;
  - plus, for prefix-buffer rollouts with ``prefix_buffer_decision_bonus > 0`` and ``format > 0``, FrozenLake's
    four-quadrant bonus on the first new turn after the replayed prefix (``prefix_buffer_num_turns`` turns): a
    ``wrong`` prefix followed by a pointing turn and a correct answer +bonus, followed directly by an answer
    -bonus; a ``right`` prefix followed directly by a correct answer +bonus, followed by a pointing turn -bonus.
    The replayed prefix's turns are part of ``turns`` and count for the step cost, as in FrozenLake.

Metrics (``METRIC_KEYS``, "overall" first): ``correct``, ``format``, ``reflection``; ``correct_turn1`` (the first
turn's point, pointing or answer, is correct by the rule), ``dist_turn1`` (``d`` of that point, 1 if none),
``dist_final`` (``d`` of the answer, else of the last valid pointed point, else 1); ``n_turns``; ``n_points``
(pointing turns with a valid coordinate, in the image or not); ``break`` (1 when ``reflection_raw < 0``);
``decision_bonus``; ``step_cost`` (what was subtracted).

Model text never raises; caller mistakes (unknown options, a bad spec, a non-string turn) raise ValueError.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from vrrl_jax.rl.prefix_buffer import (
  BUFFER_FIELD_NAMES,
  BufferFields,
  buffer_fields_of,
  per_sample_buffer_fields,
)
from vrrl_jax.tasks.grounding import parse, scenes

METRIC_KEYS = (
  "overall",
  "correct",
  "format",
  "reflection",
  "correct_turn1",
  "dist_turn1",
  "dist_final",
  "n_turns",
  "n_points",
  "break",
  "decision_bonus",
  "step_cost",
)
FORMAT_SCORE = 0.1
CORRECT_RULES = ("box", "point", "box_or_point")
PREFIX_TYPES = ("wrong", "right")


def _number(name: str, value: Any, *, lo: float | None = None, hi: float | None = None) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ValueError(f"{name} must be a number, got {value!r}")
  value = float(value)
  if not math.isfinite(value):
    raise ValueError(f"{name} must be finite, got {value}")
  if lo is not None and value < lo:
    raise ValueError(f"{name} must be >= {lo}, got {value}")
  if hi is not None and value > hi:
    raise ValueError(f"{name} must be <= {hi}, got {value}")
  return value


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  """The reward's options (see the module docstring); validated on creation."""

  correct_value: float = 1.0
  step_cost: float = 0.01
  reflect_weight: float = 0.9
  lambda_deg: float = 1.0
  reflect_lower_clip: float = 0.0
  correct_rule: str = "box"
  tolerance_px: float = 20.0
  min_points: int = 1
  point_format: str = parse.DEFAULT_POINT_FORMAT
  prefix_buffer_decision_bonus: float = 0.0

  def __post_init__(self):
    checked = {
      "correct_value": _number("correct_value", self.correct_value, lo=0.0),
      "step_cost": _number("step_cost", self.step_cost, lo=0.0),
      "reflect_weight": _number("reflect_weight", self.reflect_weight, lo=0.0),
      # A negative multiplier would reward moving away from the target.
      "lambda_deg": _number("lambda_deg", self.lambda_deg, lo=0.0),
      # A positive floor would pay for any second look at all.
      "reflect_lower_clip": _number("reflect_lower_clip", self.reflect_lower_clip, hi=0.0),
      "tolerance_px": _number("tolerance_px", self.tolerance_px, lo=0.0),
      "prefix_buffer_decision_bonus": _number(
        "prefix_buffer_decision_bonus", self.prefix_buffer_decision_bonus, lo=0.0
      ),
    }
    if self.correct_rule not in CORRECT_RULES:
      raise ValueError(f"unknown correct_rule {self.correct_rule!r}; choose one of {CORRECT_RULES}")
    if isinstance(self.min_points, bool) or not isinstance(self.min_points, numbers.Integral) or self.min_points < 0:
      raise ValueError(f"min_points must be an int >= 0, got {self.min_points!r}")
    checked["min_points"] = int(self.min_points)
    parse.check_point_format(self.point_format)
    for name, value in checked.items():
      object.__setattr__(self, name, value)

  @classmethod
  def from_mapping(cls, options: Mapping[str, Any]) -> "RewardConfig":
    """From a plain mapping or ``ml_collections.ConfigDict``; unknown keys raise ValueError."""
    options = {k: options[k] for k in options.keys()}
    unknown = sorted(set(options) - _CONFIG_FIELDS)
    if unknown:
      raise ValueError(f"unknown reward option(s) {unknown}; expected a subset of {sorted(_CONFIG_FIELDS)}")
    return cls(**options)


_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(RewardConfig))
_BUFFER_FIELDS = BUFFER_FIELD_NAMES


def is_correct(point: tuple[int, int] | None, question: scenes.Question, config: RewardConfig) -> bool:
  """Whether ``point`` answers ``question`` under ``config.correct_rule``."""
  if point is None:
    return False
  x, y = point
  x1, y1, x2, y2 = question.box
  in_box = x1 <= x <= x2 and y1 <= y <= y2
  near = math.hypot(x - question.point[0], y - question.point[1]) <= config.tolerance_px
  return {"box": in_box, "point": near, "box_or_point": in_box or near}[config.correct_rule]


def normalized_distance(point: tuple[int, int] | None, question: scenes.Question, size: tuple[int, int]) -> float:
  """``min(1, |p - t| / diagonal)``; 1 for no point."""
  if point is None:
    return 1.0
  return min(1.0, math.hypot(point[0] - question.point[0], point[1] - question.point[1]) / math.hypot(*size))


def reflection_raw_sum(distances: Sequence[float], lambda_deg: float) -> float:
  """Unclipped sum of distance reductions between consecutive points, increases weighted by lambda_deg."""
  total = 0.0
  for prev, cur in zip(distances, distances[1:]):
    delta = float(prev) - float(cur)
    total += delta if delta >= 0.0 else lambda_deg * delta
  return total


def _inside(point: tuple[int, int], size: tuple[int, int]) -> bool:
  return 0 <= point[0] < size[0] and 0 <= point[1] < size[1]


def format_score(parsed: Sequence[parse.ParsedTurn], size: tuple[int, int], min_points: int) -> float:
  """``FORMAT_SCORE`` when the episode has the protocol's shape (module docstring, (a)-(e)), else 0."""
  if len(parsed) < min_points + 1:
    return 0.0
  if any(not t.well_formed for t in parsed):
    return 0.0
  if not parsed[-1].is_answer or any(not t.is_point for t in parsed[:-1]):
    return 0.0
  points = [t.point for t in parsed[:-1]]
  if any(not _inside(p, size) for p in points) or len(set(points)) != len(points):
    return 0.0
  return FORMAT_SCORE


def _decision_bonus(parsed, correct: bool, buffer: BufferFields, bonus: float) -> float:
  num_prefix = buffer.prefix_buffer_num_turns
  if not buffer.is_prefix_buffer_rollout or not 0 < num_prefix < len(parsed):
    return 0.0
  first_new = parsed[num_prefix]
  if buffer.prefix_buffer_type == "wrong":
    if first_new.is_point and correct:
      return bonus
    if first_new.is_answer:
      return -bonus
  elif buffer.prefix_buffer_type == "right":
    if first_new.is_answer and correct:
      return bonus
    if first_new.is_point:
      return -bonus
  return 0.0


def check_turns(turns: Sequence[str]) -> list[str]:
  if isinstance(turns, (str, bytes)) or not isinstance(turns, Iterable):
    raise ValueError(f"turns must be a sequence of turn strings, got {type(turns).__name__}")
  turns = list(turns)
  for i, text in enumerate(turns):
    if not isinstance(text, str):
      raise ValueError(f"turn {i} must be a str, got {type(text).__name__}")
  return turns


def _score(turns: list[str], spec: scenes.GroundingSpec, config: RewardConfig, buffer: BufferFields) -> dict:
  question = scenes.scene_question(spec)
  size = spec.size
  parsed = [parse.parse_turn(text, config.point_format) for text in turns]
  answer_index = next((i for i, t in enumerate(parsed) if t.is_answer), None)
  answer = parsed[answer_index].point if answer_index is not None else None
  until = len(parsed) if answer_index is None else answer_index
  pointed = [t.point for t in parsed[:until] if t.is_point and t.point is not None]
  progress = [p for p in pointed if _inside(p, size)] + ([answer] if answer is not None else [])
  distances = [normalized_distance(p, question, size) for p in progress]
  raw = reflection_raw_sum(distances, config.lambda_deg)
  reflection = max(config.reflect_lower_clip, min(1.0, raw)) if len(distances) >= 2 else 0.0
  correct = is_correct(answer, question, config)
  first = parsed[0].point if parsed else None
  final = answer if answer is not None else (pointed[-1] if pointed else None)
  fmt = format_score(parsed, size, config.min_points)
  n_points = sum(1 for t in parsed if t.is_point and t.point is not None)

  step_cost = 0.0
  if fmt <= 0.0:
    overall = 0.0
  elif correct:
    step_cost = config.step_cost * max(0, n_points - config.min_points)
    overall = config.correct_value - step_cost
  else:
    overall = fmt + config.reflect_weight * reflection
  bonus = 0.0
  if config.prefix_buffer_decision_bonus > 0 and fmt > 0.0:
    bonus = _decision_bonus(parsed, correct, buffer, config.prefix_buffer_decision_bonus)
  overall += bonus
  return {
    "overall": float(overall),
    "correct": float(correct),
    "format": float(fmt),
    "reflection": float(reflection),
    "correct_turn1": float(is_correct(first, question, config)),
    "dist_turn1": normalized_distance(first, question, size),
    "dist_final": normalized_distance(final, question, size),
    "n_turns": float(len(parsed)),
    "n_points": float(n_points),
    "break": 1.0 if raw < 0.0 else 0.0,
    "decision_bonus": float(bonus),
    "step_cost": float(step_cost),
  }


def _config(config: RewardConfig | None) -> RewardConfig:
  if config is None:
    return RewardConfig()
  if not isinstance(config, RewardConfig):
    raise ValueError(f"config must be a RewardConfig, got {type(config).__name__}")
  return config


def score_turns(
  turns: Sequence[str],
  spec,
  config: RewardConfig | None = None,
  buffer: BufferFields | Mapping[str, Any] | None = None,
) -> dict[str, float]:
  """Scores one episode: every key of ``METRIC_KEYS`` as a float."""
  return _score(check_turns(turns), scenes.parse_spec(spec), _config(config), buffer_fields_of(buffer, "buffer"))


def score_batch(
  turns_batch: Sequence[Sequence[str]],
  specs: Sequence,
  config: RewardConfig | None = None,
  buffer_fields: Sequence[BufferFields | Mapping[str, Any] | None] | Mapping[str, Sequence[Any]] | None = None,
) -> dict[str, np.ndarray]:
  """Scores a rollout batch: one float64 ``[batch]`` array per metric key.

  ``buffer_fields`` is per sample (a sequence of BufferFields / mappings / None) or columnar (a mapping from field
  name to a length-``batch`` sequence).
  """
  config = _config(config)
  turns_batch, specs = list(turns_batch), list(specs)
  batch = len(turns_batch)
  if len(specs) != batch:
    raise ValueError(f"got {batch} transcripts but {len(specs)} specs")
  buffers = per_sample_buffer_fields(buffer_fields, batch)
  out = {key: np.zeros(batch, dtype=np.float64) for key in METRIC_KEYS}
  for i, (turns, spec, buffer) in enumerate(zip(turns_batch, specs, buffers)):
    metrics = _score(check_turns(turns), scenes.parse_spec(spec), config, buffer)
    for key in METRIC_KEYS:
      out[key][i] = metrics[key]
  return out
