"""Confidence intervals for comparing training runs: a bootstrap over eval maps and seeds, Wilson intervals for one
proportion, and the least-squares slope test of a training curve.

Eval outcomes are arrays ``[seeds, maps]`` of 0/1 (every seed of an arm evaluated on the same maps). The bootstrap
resamples seeds and maps with replacement; maps are resampled once per replicate and shared by every arm compared,
so a difference between two arms is paired over maps (the maps' difficulty cancels) while their seeds vary
independently.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 0.975 quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
  """The Wilson score interval of a binomial proportion (95% by default)."""
  if n <= 0 or not 0 <= successes <= n:
    raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes}/{n}")
  p = successes / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return max(0.0, centre - half), min(1.0, centre + half)


def _check_outcomes(name: str, outcomes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = {}
  for group, values in outcomes.items():
    values = np.asarray(values, np.float64)
    if values.ndim != 2 or values.shape[0] < 1 or values.shape[1] < 1:
      raise ValueError(f"{name}[{group!r}] must be [seeds, maps] with at least one of each, got shape {values.shape}")
    out[group] = values
  return out


def bootstrap_means(
  arms: Mapping[str, Mapping[str, np.ndarray]], *, num_samples: int = 2000, seed: int = 0
) -> dict[str, np.ndarray]:
  """Bootstrap replicates of each arm's mean outcome over all its (seed, map) cells.

  ``arms``: arm -> group (e.g. an eval level) -> outcomes [seeds, maps]. Every arm must have the same groups with the
  same number of maps per group (the same eval maps); arms may have different numbers of seeds. Per replicate, each
  group's maps are resampled once for all arms and each arm's seeds are resampled on their own. Returns arm ->
  [num_samples] replicate means (groups weighted by their number of maps).
  """
  if not arms:
    raise ValueError("no arms to bootstrap")
  checked = {arm: _check_outcomes(arm, groups) for arm, groups in arms.items()}
  first = next(iter(checked.values()))
  for arm, groups in checked.items():
    if {g: v.shape[1] for g, v in groups.items()} != {g: v.shape[1] for g, v in first.items()}:
      raise ValueError(f"arm {arm!r} was not evaluated on the same groups and map counts as the others")
  rng = np.random.default_rng(seed)
  total_maps = sum(v.shape[1] for v in first.values())
  sums = {arm: np.zeros(num_samples) for arm in checked}
  for group in sorted(first):
    num_maps = first[group].shape[1]
    maps = rng.integers(0, num_maps, size=(num_samples, num_maps))
    for arm in sorted(checked):
      values = checked[arm][group]
      seeds = rng.integers(0, values.shape[0], size=(num_samples, values.shape[0]))
      # mean over the resampled seeds of the mean over the resampled maps, weighted by the group's map count
      per_seed = values[seeds[:, :, None], maps[:, None, :]].mean(axis=2)  # [samples, seeds]
      sums[arm] += per_seed.mean(axis=1) * num_maps
  return {arm: s / total_maps for arm, s in sums.items()}


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
  """The central ``level`` interval of bootstrap replicates."""
  tail = (1.0 - level) / 2 * 100
  lo, hi = np.percentile(np.asarray(replicates), [tail, 100 - tail])
  return float(lo), float(hi)


def point_mean(groups: Mapping[str, np.ndarray]) -> float:
  """The mean outcome over all (seed, map) cells of all groups (groups weighted by their map count)."""
  checked = _check_outcomes("groups", groups)
  return float(sum(v.mean(axis=0).sum() for v in checked.values()) / sum(v.shape[1] for v in checked.values()))


def slope_test(values: Sequence[float]) -> tuple[float, float]:
  """Least-squares slope of ``values`` against their index, and its two-sided p-value (t test, n - 2 dof)."""
  from scipy import stats as scipy_stats  # a dependency of jax

  y = np.asarray(values, np.float64)
  if y.ndim != 1 or len(y) < 3:
    raise ValueError(f"a slope test needs at least 3 values, got shape {y.shape}")
  result = scipy_stats.linregress(np.arange(len(y), dtype=np.float64), y)
  return float(result.slope), float(result.pvalue)
