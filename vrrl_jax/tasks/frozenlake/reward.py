"""The FrozenLake reflection reward (VRRL_SPEC section 2), with upstream's exact semantics.

Re-implements the ``reflection_tag`` path of upstream's
``EasyR1/training/reward_function/frozenlake_score.py`` on top of our own map and parser code. Upstream
scores a whole decoded transcript and splits it into assistant turns itself; here the rollout hands us
the assistant turns already split. For a prefix-buffer rollout ``turns`` holds the replayed prefix's
assistant turns followed by the new ones (upstream's response string contains both), and the forced
``<THINK>`` opener of a ``wrong`` entry is part of the first new turn's text.

Host-side Python/numpy only. Model text never raises; caller mistakes (unknown or out-of-range
options, a malformed map spec, a non-string turn) do.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from vrrl_jax.rl.prefix_buffer import BUFFER_FIELD_NAMES, BufferFields, per_sample_buffer_fields
from vrrl_jax.tasks.frozenlake import maps
from vrrl_jax.tasks.frozenlake.parse import FINAL, ROUTE, ParsedTurn, parse_turn

# Upstream's metric keys, in upstream's order.
METRIC_KEYS = (
  "overall",
  "format",
  "reflection",
  "em",
  "pr_final",
  "pr_turn1",
  "n_turns",
  "outcome",
  "em_turn1",
  "em_final",
  "break",
  "decision_bonus",
  "step_cost",
)
FORMAT_SCORE = 0.1
OUTCOME_REWARDS = ("em", "pr")
PREFIX_TYPES = ("wrong", "right")


def _check_number(name: str, value: Any, *, lo: float | None = None, hi: float | None = None) -> float:
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


def _check_bool(name: str, value: Any) -> bool:
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name} must be a bool, got {value!r}")
  return bool(value)


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  """Upstream's reward kwargs with upstream's defaults (``compute_score``); validated on creation."""

  lambda_deg: float = 1.0
  reflect_weight: float = 0.9
  min_turns: int = 1
  correct_value: float = 1.0
  outcome_reward: str = "em"
  outcome_weight: float = 0.9
  pr_overshoot_zero: bool = False
  reflect_lower_clip: float = 0.0
  em_reflect_bonus_weight: float = 0.0
  em_reflect_step_discount: float = 1.0
  step_cost: float = 0.0
  step_cost_churn_only: bool = False
  prefix_buffer_decision_bonus: float = 0.0

  def __post_init__(self):
    checked = {
      # A negative multiplier would reward backsliding.
      "lambda_deg": _check_number("lambda_deg", self.lambda_deg, lo=0.0),
      "reflect_weight": _check_number("reflect_weight", self.reflect_weight, lo=0.0),
      "correct_value": _check_number("correct_value", self.correct_value, lo=0.0),
      "outcome_weight": _check_number("outcome_weight", self.outcome_weight, lo=0.0),
      # Upstream's floor for net-negative reflection ("breaks"); a positive floor would pay
      # for any revision at all, and the clip range must stay within [floor, 1].
      "reflect_lower_clip": _check_number("reflect_lower_clip", self.reflect_lower_clip, hi=0.0),
      "em_reflect_bonus_weight": _check_number("em_reflect_bonus_weight", self.em_reflect_bonus_weight, lo=0.0),
      # A discount above 1 would pay more for more revisions (the gaming it exists to prevent).
      "em_reflect_step_discount": _check_number(
        "em_reflect_step_discount", self.em_reflect_step_discount, lo=0.0, hi=1.0
      ),
      "step_cost": _check_number("step_cost", self.step_cost, lo=0.0),
      # Upstream gates on > 0: a negative value would silently disable it.
      "prefix_buffer_decision_bonus": _check_number(
        "prefix_buffer_decision_bonus", self.prefix_buffer_decision_bonus, lo=0.0
      ),
      "pr_overshoot_zero": _check_bool("pr_overshoot_zero", self.pr_overshoot_zero),
      "step_cost_churn_only": _check_bool("step_cost_churn_only", self.step_cost_churn_only),
    }
    if isinstance(self.min_turns, bool) or not isinstance(self.min_turns, numbers.Integral):
      raise ValueError(f"min_turns must be an int, got {self.min_turns!r}")
    if self.min_turns < 1:
      raise ValueError(f"min_turns must be >= 1, got {self.min_turns}")
    checked["min_turns"] = int(self.min_turns)
    if self.outcome_reward not in OUTCOME_REWARDS:
      raise ValueError(f"unknown outcome_reward={self.outcome_reward!r}; expected one of {OUTCOME_REWARDS}")
    for name, value in checked.items():
      object.__setattr__(self, name, value)

  @classmethod
  def released(cls) -> "RewardConfig":
    """The released VRRL recipe (train_frozenlake_vrrl_qwen3_vl_4b_4gpu.sh)."""
    return cls(
      lambda_deg=0.5,
      reflect_weight=0.9,
      min_turns=1,
      correct_value=1.0,
      outcome_reward="em",
      pr_overshoot_zero=True,
      reflect_lower_clip=0.0,
      em_reflect_bonus_weight=0.1,
      em_reflect_step_discount=1.0,
      step_cost=0.01,
      step_cost_churn_only=False,
    )

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

# BFS distances depend only on the layout and the goal; a rollout group of n samples shares one map.
_DISTANCE_CACHE: dict[tuple[tuple[str, ...], int], np.ndarray] = {}
_DISTANCE_CACHE_MAX = 16384


def goal_distances(spec: maps.MapSpec) -> np.ndarray:
  """Read-only ``[L, L]`` BFS distances to the goal (-1 at holes), cached by (layout, goal)."""
  key = (spec.layout, spec.target_pos)
  dist = _DISTANCE_CACHE.get(key)
  if dist is None:
    if len(_DISTANCE_CACHE) >= _DISTANCE_CACHE_MAX:
      _DISTANCE_CACHE.clear()
    dist = maps.distance_map(spec)
    dist.setflags(write=False)
    _DISTANCE_CACHE[key] = dist
  return dist


def _optimal_len(spec: maps.MapSpec, dist: np.ndarray) -> int | None:
  d = int(dist[spec.start_rc])
  return None if d == maps.UNREACHABLE else d


def progress_rate(spec: maps.MapSpec, actions: Sequence[str], n_opt: int, *, overshoot_zero: bool = False) -> float:
  """(longest legal prefix whose every move strictly lowers the BFS distance) / n_opt.

  With ``overshoot_zero`` a route that completes an optimal prefix but carries extra actions
  scores 0 (upstream's fix for the PR=1 overshoot hack).
  """
  dist = goal_distances(spec)
  cur = int(dist[spec.start_rc])
  matched = 0
  trace = maps.walk(spec, actions)
  for off_grid, in_hole, cell in zip(trace.off_grid, trace.in_hole, trace.elf):
    if off_grid or in_hole:
      break
    nxt = int(dist[cell])
    if nxt == maps.UNREACHABLE or nxt >= cur:
      break
    matched += 1
    cur = nxt
  if overshoot_zero and matched == n_opt and len(actions) > n_opt:
    return 0.0
  return matched / n_opt


def reflection_raw_sum(pr_list: Sequence[float], lambda_deg: float) -> float:
  """Unclipped sum of PR deltas between consecutive routes, drops weighted by lambda_deg."""
  if len(pr_list) < 2:
    return 0.0
  total = 0.0
  for prev, cur in zip(pr_list, pr_list[1:]):
    delta = float(cur) - float(prev)
    total += delta if delta >= 0.0 else lambda_deg * delta
  return total


def format_score(parsed: Sequence[ParsedTurn], min_turns: int) -> float:
  """0.1 when the transcript has the reflection protocol's structure, else 0.

  Legality of moves (off-grid, holes) is deliberately not checked: the model may try an illegal
  route and recover; EM alone keeps illegal commits from the jackpot.
  """
  if not parsed:
    return 0.0
  if any(not t.ok or t.kind is None for t in parsed):
    return 0.0
  kinds = [t.kind for t in parsed]
  if kinds[0] != ROUTE or kinds.count(FINAL) != 1 or kinds[-1] != FINAL:
    return 0.0
  if len(parsed) < min_turns:
    return 0.0
  if any(not t.actions for t in parsed):
    return 0.0
  if parsed[-1].actions != parsed[-2].actions:
    return 0.0
  routes = [t.actions for t in parsed if t.kind == ROUTE]
  if len(routes) != len(set(routes)):
    return 0.0
  last = len(parsed) - 1
  for i, turn in enumerate(parsed):
    # Turn 1 has no feedback to reflect on and FINAL is commit-only; revisions must reason.
    wants_think = 0 < i < last
    if turn.has_think != wants_think:
      return 0.0
  return FORMAT_SCORE


def _decision_bonus(parsed: Sequence[ParsedTurn], em: bool, buffer: BufferFields, bonus: float) -> float:
  """Upstream's four-quadrant bonus on the first new turn after a replayed prefix."""
  num_prefix = buffer.prefix_buffer_num_turns
  if not buffer.is_prefix_buffer_rollout or not 0 < num_prefix < len(parsed):
    return 0.0
  first_new = parsed[num_prefix].kind
  if buffer.prefix_buffer_type == "wrong":
    if first_new == ROUTE and em:
      return bonus
    if first_new == FINAL:
      return -bonus
  elif buffer.prefix_buffer_type == "right":
    if first_new == FINAL and em:
      return bonus
    if first_new == ROUTE:
      return -bonus
  return 0.0


def _check_turns(turns: Sequence[str]) -> list[str]:
  if isinstance(turns, (str, bytes)) or not isinstance(turns, Iterable):
    raise ValueError(f"turns must be a sequence of turn strings, got {type(turns).__name__}")
  turns = list(turns)
  for i, text in enumerate(turns):
    if not isinstance(text, str):
      raise ValueError(f"turn {i} must be a str, got {type(text).__name__}")
  return turns


def _score_parsed_map(
  turns: list[str], spec: maps.MapSpec, config: RewardConfig, buffer: BufferFields
) -> dict[str, float]:
  dist = goal_distances(spec)
  n_opt = _optimal_len(spec, dist)
  if n_opt is None:
    # Upstream returns its all-zero floor result (n_turns included) for an unreachable goal.
    return {key: 0.0 for key in METRIC_KEYS}

  # Upstream's transcript splitter drops whitespace-only assistant turns.
  parsed = [parse_turn(text) for text in turns if text.strip()]
  routes = [t.actions for t in parsed if t.kind == ROUTE and t.actions is not None]
  pr_list = [progress_rate(spec, a, n_opt, overshoot_zero=config.pr_overshoot_zero) for a in routes]

  # Committed answer: the last parseable FINAL, else the last parseable route.
  finals = [t.actions for t in parsed if t.kind == FINAL and t.actions is not None]
  committed = finals[-1] if finals else (routes[-1] if routes else None)

  em = committed is not None and maps.is_exact_match(spec, committed, n_opt)
  pr_final = (
    progress_rate(spec, committed, n_opt, overshoot_zero=config.pr_overshoot_zero) if committed is not None else 0.0
  )
  em_turn1 = bool(routes) and maps.is_exact_match(spec, routes[0], n_opt)
  raw_reflection = reflection_raw_sum(pr_list, config.lambda_deg)
  reflection = max(config.reflect_lower_clip, min(1.0, raw_reflection)) if len(pr_list) >= 2 else 0.0
  fmt = format_score(parsed, config.min_turns)
  n_revisions = max(len(pr_list) - 1, 0)

  if fmt <= 0.0:
    overall = outcome = 0.0
  elif em:
    overall = outcome = config.correct_value
    if config.em_reflect_bonus_weight > 0 and reflection > 0:
      overall += config.em_reflect_bonus_weight * reflection * config.em_reflect_step_discount**n_revisions
  elif config.outcome_reward == "pr":
    outcome = config.outcome_weight * pr_final
    overall = min(config.correct_value, fmt + config.reflect_weight * reflection + outcome)
  else:
    outcome = 0.0
    overall = fmt + config.reflect_weight * reflection

  step_cost = 0.0
  if config.step_cost > 0.0 and em and fmt > 0.0:
    if config.step_cost_churn_only:
      # Only route turns after the first one that already had PR == 1 (post-correct churn).
      first_correct = next((i for i, pr in enumerate(pr_list) if pr >= 1.0), None)
      taxed = 0 if first_correct is None else len(pr_list) - 1 - first_correct
    else:
      taxed = n_revisions
    step_cost = config.step_cost * taxed
    overall -= step_cost

  decision_bonus = 0.0
  if config.prefix_buffer_decision_bonus > 0 and fmt > 0.0:
    decision_bonus = _decision_bonus(parsed, em, buffer, config.prefix_buffer_decision_bonus)
  overall += decision_bonus

  return {
    "overall": float(overall),
    "format": float(fmt),
    "reflection": float(reflection),
    "em": float(em),
    "pr_final": float(pr_final),
    "pr_turn1": float(pr_list[0]) if pr_list else 0.0,
    "n_turns": float(len(parsed)),
    "outcome": float(outcome),
    "em_turn1": float(em_turn1),
    "em_final": float(em),
    "break": 1.0 if raw_reflection < 0.0 else 0.0,
    "decision_bonus": float(decision_bonus),
    "step_cost": float(step_cost),
  }


def score_turns(turns: Sequence[str], spec: Mapping[str, Any] | maps.MapSpec, **kwargs: Any) -> dict[str, float]:
  """Scores one rollout. ``kwargs`` are ``RewardConfig`` fields and ``BufferFields`` fields.

  Returns every key of ``METRIC_KEYS``. Unknown or invalid kwargs raise ValueError, a malformed
  spec raises MapSpecError; any turn text scores.
  """
  unknown = sorted(set(kwargs) - _CONFIG_FIELDS - _BUFFER_FIELDS)
  if unknown:
    raise ValueError(
      f"unknown reward kwarg(s) {unknown}; expected a subset of {sorted(_CONFIG_FIELDS | _BUFFER_FIELDS)}"
    )
  config = RewardConfig(**{k: v for k, v in kwargs.items() if k in _CONFIG_FIELDS})
  buffer = BufferFields(**{k: v for k, v in kwargs.items() if k in _BUFFER_FIELDS})
  return _score_parsed_map(_check_turns(turns), maps.parse_spec(spec), config, buffer)


def score_batch(
  turns_batch: Sequence[Sequence[str]],
  specs: Sequence[Mapping[str, Any] | maps.MapSpec],
  config: RewardConfig,
  buffer_fields: Sequence[BufferFields | Mapping[str, Any] | None] | Mapping[str, Sequence[Any]] | None = None,
) -> dict[str, np.ndarray]:
  """Scores a rollout batch: one float64 ``[batch]`` array per metric key.

  ``buffer_fields`` is per sample (a sequence of BufferFields / mappings / None) or columnar (a
  mapping from field name to a length-``batch`` sequence, as the trainer's per-sample arrays).
  """
  if not isinstance(config, RewardConfig):
    raise ValueError(f"config must be a RewardConfig, got {type(config).__name__}")
  turns_batch = list(turns_batch)
  specs = list(specs)
  batch = len(turns_batch)
  if len(specs) != batch:
    raise ValueError(f"got {batch} transcripts but {len(specs)} specs")
  buffers = per_sample_buffer_fields(buffer_fields, batch)

  # A group's n samples usually share one spec object: validate it once.
  parsed_specs: dict[int, maps.MapSpec] = {}
  out = {key: np.zeros(batch, dtype=np.float64) for key in METRIC_KEYS}
  for i, (turns, spec, buffer) in enumerate(zip(turns_batch, specs, buffers)):
    map_spec = parsed_specs.get(id(spec))
    if map_spec is None:
      map_spec = parsed_specs[id(spec)] = maps.parse_spec(spec)
    metrics = _score_parsed_map(_check_turns(turns), map_spec, config, buffer)
    for key in METRIC_KEYS:
      out[key][i] = metrics[key]
  return out
