"""Online filtering of question groups with no learning signal (VRRL_SPEC section 4, step 3).

A group whose mean ``overall`` reward is ``<= low`` or ``>= high`` (released 0.01 / 0.99) has
(almost) equal rewards, hence (almost) zero GRPO advantages, and is dropped; more prompts are
rolled out until the batch holds ``num_groups`` groups, as upstream's ``_make_batch_data``
(fc2869/VRRL ``ray_trainer.py``): up to ``max_tries`` rollouts in all, kept groups concatenated in
draw order, the surplus of the last draw cut off. Upstream raises when the tries run out; here the
caller gets what was kept and ``exhausted=True`` to log (and skips the step if nothing was kept),
because a crash hours into a run loses more than one thin batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class FilterConfig:
  """``enabled=False`` keeps every group (one draw), as upstream with online_filtering off."""

  enabled: bool = True
  low: float = 0.01
  high: float = 0.99
  max_tries: int = 20

  def __post_init__(self):
    if not isinstance(self.enabled, bool):
      raise ValueError(f"FilterConfig.enabled must be a bool, got {self.enabled!r}")
    for name in ("low", "high"):
      value = getattr(self, name)
      if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(float(value))
      ):
        raise ValueError(f"FilterConfig.{name} must be a finite number, got {value!r}")
    if self.low >= self.high:
      raise ValueError(f"FilterConfig.low={self.low} must be < high={self.high}: every group would be dropped")
    tries = self.max_tries
    if isinstance(tries, bool) or not isinstance(tries, (int, np.integer)) or tries < 1:
      raise ValueError(f"FilterConfig.max_tries must be an integer >= 1, got {tries!r}")


def keep_groups(overall: np.ndarray, group_ids: np.ndarray, num_groups: int, config: FilterConfig) -> np.ndarray:
  """Per-group keep flags [num_groups]: mean overall reward strictly inside (low, high).

  ``overall`` and ``group_ids`` are per sample [batch]; every group must have a sample.
  """
  overall = np.asarray(overall, np.float64)
  group_ids = np.asarray(group_ids)
  if overall.ndim != 1 or overall.shape != group_ids.shape:
    raise ValueError(f"overall {overall.shape} and group_ids {group_ids.shape} must both be [batch]")
  if not np.issubdtype(group_ids.dtype, np.integer):
    raise ValueError(f"group_ids must be integers, got dtype {group_ids.dtype}")
  if not np.isfinite(overall).all():
    raise ValueError("overall rewards must be finite")
  if group_ids.size and (group_ids.min() < 0 or group_ids.max() >= num_groups):
    raise ValueError(f"group_ids must lie in [0, {num_groups}), got [{group_ids.min()}, {group_ids.max()}]")
  counts = np.bincount(group_ids, minlength=num_groups)
  if (counts == 0).any():
    raise ValueError(f"groups {np.flatnonzero(counts == 0).tolist()} have no samples")
  if not config.enabled:
    return np.ones(num_groups, bool)
  means = np.bincount(group_ids, weights=overall, minlength=num_groups) / counts
  return (means > config.low) & (means < config.high)


@dataclasses.dataclass(frozen=True)
class FillResult:
  """Kept groups (at most ``num_groups``, draw order) and what it took to get them."""

  groups: list[Any]
  num_tries: int
  exhausted: bool  # the try limit was reached with fewer than num_groups kept
  num_drawn: int  # groups rolled out over all tries
  num_dropped: int  # groups filtered out (the surplus of the last draw is not counted here)

  def metrics(self) -> dict[str, float]:
    return {
      "filter/num_tries": float(self.num_tries),
      "filter/exhausted": float(self.exhausted),
      "filter/num_kept": float(len(self.groups)),
      "filter/num_drawn": float(self.num_drawn),
      "filter/num_dropped": float(self.num_dropped),
    }


def fill_groups(
  draw: Callable[[], Sequence[Any]], overall_of: Callable[[Any], np.ndarray], num_groups: int, config: FilterConfig
) -> FillResult:
  """Calls ``draw()`` (one rollout of fresh prompts -> list of groups) until ``num_groups`` groups
  survive filtering or ``config.max_tries`` draws were made. ``overall_of(group)`` gives the
  group's per-sample overall rewards. Never raises for running out of tries."""
  if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)) or num_groups < 1:
    raise ValueError(f"num_groups must be a positive integer, got {num_groups!r}")
  kept: list[Any] = []
  num_tries = num_drawn = num_dropped = 0
  while len(kept) < num_groups and num_tries < config.max_tries:
    num_tries += 1
    groups = list(draw())
    if not groups:
      raise ValueError("draw() returned no groups")
    rewards = [np.asarray(overall_of(group), np.float64).reshape(-1) for group in groups]
    if any(r.size == 0 for r in rewards):
      raise ValueError("overall_of(group) returned an empty reward array")
    group_ids = np.concatenate([np.full(r.size, g) for g, r in enumerate(rewards)])
    keep = keep_groups(np.concatenate(rewards), group_ids, len(groups), config)
    num_drawn += len(groups)
    num_dropped += int((~keep).sum())
    kept.extend(group for group, k in zip(groups, keep) if k)
  exhausted = len(kept) < num_groups
  return FillResult(
    groups=kept[:num_groups], num_tries=num_tries, exhausted=exhausted, num_drawn=num_drawn, num_dropped=num_dropped
  )
