"""GRPO advantages (VRRL_SPEC section 4, step 6).

Each sample's outcome reward is normalised within its question group:
``(r - mean_group) / (std_group + eps)``, with the Bessel-corrected standard deviation that
``torch.std`` computes, as upstream's ``compute_grpo_outcome_advantage`` (fc2869/VRRL
``core_algos.py``) does. Upstream asserts every group has more than one sample ("GRPO needs
rollout.n > 1"); a one-sample group has no baseline (torch.std of one element is nan), so it is
rejected here too. Rows with a negative group id are padding (static batch shapes) and get 0.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

GRPO_EPS = 1e-6


def _check_concrete_groups(group_ids: np.ndarray, num_groups: int) -> None:
  if group_ids.ndim != 1:
    raise ValueError(f"group_ids must be 1-D [batch], got shape {group_ids.shape}")
  if not np.issubdtype(group_ids.dtype, np.integer):
    raise ValueError(f"group_ids must be integers, got dtype {group_ids.dtype}")
  if group_ids.size and group_ids.max() >= num_groups:
    raise ValueError(f"group id {int(group_ids.max())} is out of range for num_groups={num_groups}")
  sizes = np.bincount(group_ids[group_ids >= 0], minlength=num_groups)
  singletons = np.flatnonzero(sizes == 1)
  if singletons.size:
    raise ValueError(
      f"GRPO needs at least 2 samples per group; groups {singletons.tolist()} have one "
      "(a one-sample group has no baseline: its std is undefined)"
    )


def grpo_advantages(rewards: jax.Array, group_ids: jax.Array, num_groups: int, eps: float = GRPO_EPS) -> jax.Array:
  """Per-sample GRPO advantages [batch] from rewards [batch] and integer group ids [batch].

  Jittable (``num_groups`` static). When ``group_ids`` is concrete (not traced) the group layout is
  validated and one-sample groups raise; under ``jit`` that check cannot run and such a group gets
  nan, exactly as torch.std would give upstream. Padding rows (group id < 0) get 0.
  """
  if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)) or num_groups < 1:
    raise ValueError(f"num_groups must be a positive integer, got {num_groups!r}")
  if not isinstance(group_ids, jax.core.Tracer):
    _check_concrete_groups(np.asarray(group_ids), int(num_groups))
  rewards = jnp.asarray(rewards, jnp.float32)
  group_ids = jnp.asarray(group_ids)
  if rewards.shape != group_ids.shape or rewards.ndim != 1:
    raise ValueError(f"rewards {rewards.shape} and group_ids {group_ids.shape} must both be [batch]")
  return _normalise_in_groups(rewards, group_ids, int(num_groups), float(eps))


@functools.partial(jax.jit, static_argnames=("num_groups", "eps"))
def _normalise_in_groups(rewards: jax.Array, group_ids: jax.Array, num_groups: int, eps: float) -> jax.Array:
  valid = group_ids >= 0
  # Padding rows go to an extra segment that is dropped, so they never touch a real group's statistics.
  segment = jnp.where(valid, group_ids, num_groups)
  num_segments = num_groups + 1
  counts = jax.ops.segment_sum(jnp.ones_like(rewards), segment, num_segments)
  means = jax.ops.segment_sum(rewards, segment, num_segments) / jnp.maximum(counts, 1.0)
  centred = rewards - means[segment]
  # Two-pass variance, Bessel-corrected (n - 1); n == 1 gives 0/0 = nan like torch.std.
  sum_sq = jax.ops.segment_sum(centred * centred, segment, num_segments)
  std = jnp.sqrt(sum_sq / (counts - 1.0))
  advantages = centred / (std[segment] + eps)
  return jnp.where(valid, advantages, 0.0)
