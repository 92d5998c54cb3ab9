"""Per-question rollout modes and the loss mask they imply (VRRL_SPEC section 3).

Host-side numpy: it runs between the rollout and the jitted update.

* ``draw_modes``: one mode per question, drawn with the configured weights among the modes that
  are enabled (weight > 0; ``prefix_buffer`` only while the buffer can sample), renormalised, as
  upstream's ``rng.choices`` over its ``enabled`` list (fc2869/VRRL
  ``multi_turn_rollout_frozenlake.py``). With nothing enabled (e.g. released weights
  normal 0 / prefix_buffer 0.4 only, buffer still filling) every question is ``normal``.
* ``loss_mask``: RandomTurnMasking for ``random_start`` samples (zero the loss on assistant turns
  ``< k``, ``k ~ U[random_start_turn_min, T-1]``, or ``k = T-1`` with ``mask_all_until_final``;
  ``T < 2`` untouched) and, with ``mask_buffer_prefix``, no loss on a replayed prefix's turns; never any loss on
  a ``random_init`` sample's injected turns.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from vrrl_jax.rl.prefix_buffer import (
  MODE_NORMAL,
  MODE_PREFIX_BUFFER,
  MODE_RANDOM_INIT,
  MODE_RANDOM_START,
  ROLLOUT_MODES,
)

# Turns 1..8 get a start-turn ratio metric, as upstream's random_restart/start_turn_{k}_ratio.
START_TURN_HISTOGRAM_MAX = 8


@dataclasses.dataclass(frozen=True)
class ModeConfig:
  """Released recipe (fc2869/VRRL run script): normal 0, random_start 0.6, prefix_buffer 0.4,
  random_start_turn_min 0, mask_all_until_final off. ``mask_buffer_prefix`` defaults to True here
  (upstream: False), so that only newly generated turns carry loss (VRRL_SPEC section 3)."""

  normal_weight: float = 0.0
  random_start_weight: float = 0.6
  prefix_buffer_weight: float = 0.4
  random_init_weight: float = 0.0  # the task's injected roll-in (grounding); FrozenLake has none
  random_start_turn_min: int = 0
  mask_all_until_final: bool = False
  mask_buffer_prefix: bool = True

  def __post_init__(self):
    for name in ("normal_weight", "random_start_weight", "prefix_buffer_weight", "random_init_weight"):
      value = getattr(self, name)
      if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(float(value))
        or value < 0
      ):
        raise ValueError(f"ModeConfig.{name} must be a finite number >= 0, got {value!r}")
    turn_min = self.random_start_turn_min
    if isinstance(turn_min, bool) or not isinstance(turn_min, (int, np.integer)) or turn_min < 0:
      raise ValueError(f"ModeConfig.random_start_turn_min must be an integer >= 0, got {turn_min!r}")
    for name in ("mask_all_until_final", "mask_buffer_prefix"):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f"ModeConfig.{name} must be a bool, got {getattr(self, name)!r}")

  def weights(self) -> dict[str, float]:
    return {
      MODE_NORMAL: float(self.normal_weight),
      MODE_RANDOM_START: float(self.random_start_weight),
      MODE_PREFIX_BUFFER: float(self.prefix_buffer_weight),
      MODE_RANDOM_INIT: float(self.random_init_weight),
    }


def mode_probabilities(config: ModeConfig, buffer_can_sample: bool) -> dict[str, float]:
  """Probability of each mode for one question, given whether the buffer can sample right now."""
  weights = config.weights()
  if not buffer_can_sample:
    weights[MODE_PREFIX_BUFFER] = 0.0
  total = sum(weights.values())
  if total == 0.0:
    return {MODE_NORMAL: 1.0, MODE_RANDOM_START: 0.0, MODE_PREFIX_BUFFER: 0.0, MODE_RANDOM_INIT: 0.0}
  return {mode: weight / total for mode, weight in weights.items()}


def draw_modes(num_questions: int, config: ModeConfig, buffer_can_sample: bool, rng: np.random.Generator) -> np.ndarray:
  """One mode per question ([num_questions] array of mode names); repeat it for the n samples."""
  if isinstance(num_questions, bool) or not isinstance(num_questions, (int, np.integer)) or num_questions < 0:
    raise ValueError(f"num_questions must be an integer >= 0, got {num_questions!r}")
  if not isinstance(rng, np.random.Generator):
    raise ValueError(f"rng must be a numpy Generator, got {type(rng).__name__}")
  probabilities = mode_probabilities(config, bool(buffer_can_sample))
  names = np.array(ROLLOUT_MODES)
  p = np.array([probabilities[mode] for mode in ROLLOUT_MODES])
  return names[rng.choice(len(names), size=int(num_questions), p=p)]


def demote_unserved_buffer_questions(modes: Sequence[str], num_entries: int) -> np.ndarray:
  """Questions drawn as ``prefix_buffer`` beyond the ``num_entries`` the buffer returned become
  ``normal`` (upstream's rule when the buffer runs short), in question order."""
  modes = np.array(modes)
  if num_entries < 0:
    raise ValueError(f"num_entries must be >= 0, got {num_entries}")
  buffer_questions = np.flatnonzero(modes == MODE_PREFIX_BUFFER)
  modes[buffer_questions[num_entries:]] = MODE_NORMAL
  return modes


def loss_mask(
  assistant_mask: np.ndarray,
  turn_index: np.ndarray,
  num_turns: np.ndarray,
  modes: Sequence[str],
  num_prefix_turns: np.ndarray,
  config: ModeConfig,
  rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
  """The training loss mask [batch, seq] and the start turn of each sample [batch].

  ``assistant_mask`` [batch, seq]: 1 on assistant tokens that may carry loss, else 0.
  ``turn_index`` [batch, seq]: assistant turn (0-based, replayed prefix turns included) of each
  token, -1 for non-assistant tokens. ``num_turns`` [batch]: assistant turns T in the sample.
  ``modes`` [batch]: per-sample mode. ``num_prefix_turns`` [batch]: assistant turns replayed from
  the buffer or injected (0 unless ``prefix_buffer`` or ``random_init``).

  Start turn (upstream's ``start_turn``, for the random_restart histogram): k for random_start
  samples (0 when T < 2), the number of prefix turns for prefix_buffer samples, 0 for normal.
  When ``random_start_turn_min > T - 1`` k is T - 1 (upstream would index past the last turn).
  """
  assistant_mask = np.asarray(assistant_mask)
  turn_index = np.asarray(turn_index)
  num_turns = np.asarray(num_turns)
  num_prefix_turns = np.asarray(num_prefix_turns)
  modes = np.asarray(modes)
  if assistant_mask.ndim != 2:
    raise ValueError(f"assistant_mask must be [batch, seq], got shape {assistant_mask.shape}")
  batch = assistant_mask.shape[0]
  if turn_index.shape != assistant_mask.shape:
    raise ValueError(f"turn_index shape {turn_index.shape} != assistant_mask shape {assistant_mask.shape}")
  for name, value in (("num_turns", num_turns), ("num_prefix_turns", num_prefix_turns), ("modes", modes)):
    if value.shape != (batch,):
      raise ValueError(f"{name} must have shape ({batch},), got {value.shape}")
  for name, value in (("turn_index", turn_index), ("num_turns", num_turns), ("num_prefix_turns", num_prefix_turns)):
    if not np.issubdtype(value.dtype, np.integer):
      raise ValueError(f"{name} must be integers, got dtype {value.dtype}")
  if not np.isin(assistant_mask, (0, 1)).all():
    raise ValueError("assistant_mask must contain only 0 and 1")
  unknown = sorted(set(modes.tolist()) - set(ROLLOUT_MODES))
  if unknown:
    raise ValueError(f"unknown rollout modes {unknown}; expected {ROLLOUT_MODES}")
  if (turn_index < -1).any():
    raise ValueError("turn_index must be -1 (not an assistant token) or a turn number >= 0")
  if ((assistant_mask == 1) & (turn_index < 0)).any():
    raise ValueError("assistant_mask is 1 on a token with turn_index -1 (not in any assistant turn)")
  if (num_turns < 0).any() or (num_prefix_turns < 0).any():
    raise ValueError("num_turns and num_prefix_turns must be >= 0")
  beyond = np.flatnonzero(turn_index.max(axis=1, initial=-1) >= num_turns)
  if beyond.size:
    raise ValueError(f"samples {beyond.tolist()} have a token with turn_index >= num_turns")
  if ((num_prefix_turns > 0) & (modes != MODE_PREFIX_BUFFER) & (modes != MODE_RANDOM_INIT)).any():
    raise ValueError("num_prefix_turns must be 0 for samples not in prefix_buffer or random_init mode")
  if (num_prefix_turns > num_turns).any():
    raise ValueError("num_prefix_turns exceeds num_turns for some sample")
  if not isinstance(rng, np.random.Generator):
    raise ValueError(f"rng must be a numpy Generator, got {type(rng).__name__}")

  mask = assistant_mask.copy()
  start_turn = np.zeros(batch, np.int64)
  for i in range(batch):
    turns = int(num_turns[i])
    if modes[i] == MODE_RANDOM_START and turns >= 2:
      last = turns - 1
      if config.mask_all_until_final:
        k = last
      else:
        k = int(rng.integers(min(config.random_start_turn_min, last), last, endpoint=True))
      start_turn[i] = k
    elif modes[i] == MODE_PREFIX_BUFFER:
      k = int(num_prefix_turns[i]) if config.mask_buffer_prefix else 0
      start_turn[i] = int(num_prefix_turns[i])
    elif modes[i] == MODE_RANDOM_INIT:
      k = start_turn[i] = int(num_prefix_turns[i])
    else:
      continue
    mask[i, (turn_index[i] >= 0) & (turn_index[i] < k)] = 0
  return mask, start_turn


def start_turn_metrics(start_turn: np.ndarray, modes: Sequence[str]) -> dict[str, float]:
  """Upstream's random_restart/* metrics: mean start turn and the share of each start turn 1..8,
  over the samples not in prefix_buffer or random_init mode (empty when there are none)."""
  start_turn = np.asarray(start_turn)
  modes = np.asarray(modes)
  if start_turn.shape != modes.shape:
    raise ValueError(f"start_turn {start_turn.shape} and modes {modes.shape} must have the same shape")
  selected = start_turn[(modes != MODE_PREFIX_BUFFER) & (modes != MODE_RANDOM_INIT)]
  if selected.size == 0:
    return {}
  metrics = {"random_restart/avg_start_turn": float(selected.mean())}
  for turn in range(1, START_TURN_HISTOGRAM_MAX + 1):
    metrics[f"random_restart/start_turn_{turn}_ratio"] = float(np.mean(selected == turn))
  return metrics
