"""GRPO advantages against a plain numpy transcription of VRRL_SPEC section 4 step 6."""

import jax
import numpy as np
import pytest

from vrrl_jax.rl import advantages


def reference_grpo(rewards, group_ids, eps=1e-6):
  """(r - mean_group) / (std_group + eps), std with Bessel correction; padding rows (id < 0) -> 0."""
  out = np.zeros(len(rewards), np.float64)
  for g in np.unique(group_ids[group_ids >= 0]):
    members = np.flatnonzero(group_ids == g)
    r = rewards[members].astype(np.float64)
    out[members] = (r - r.mean()) / (r.std(ddof=1) + eps)
  return out


def random_groups(rng, num_groups, min_size=2, max_size=9):
  sizes = rng.integers(min_size, max_size + 1, size=num_groups)
  ids = np.repeat(np.arange(num_groups), sizes)
  rng.shuffle(ids)  # groups need not be contiguous
  return ids


@pytest.mark.parametrize("seed", range(5))
def test_matches_numpy_reference_on_shuffled_groups(seed):
  rng = np.random.default_rng(seed)
  ids = random_groups(rng, num_groups=7)
  rewards = rng.normal(size=ids.size).astype(np.float32) * rng.uniform(0.01, 3.0)
  got = np.asarray(advantages.grpo_advantages(rewards, ids, num_groups=7))
  np.testing.assert_allclose(got, reference_grpo(rewards, ids), rtol=1e-4, atol=1e-5)


def test_released_group_shape_binary_like_rewards():
  # 4 questions x 8 samples with rewards from the recipe's value set, including an all-equal group.
  rng = np.random.default_rng(0)
  values = np.array([0.0, 0.1, 0.99, 1.0, 1.1, 0.55])
  rewards = rng.choice(values, size=32).astype(np.float32)
  rewards[8:16] = 1.0
  ids = np.repeat(np.arange(4), 8)
  got = np.asarray(advantages.grpo_advantages(rewards, ids, num_groups=4))
  np.testing.assert_allclose(got, reference_grpo(rewards, ids), rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(got[8:16], 0.0)  # equal rewards: zero advantage, no nan


def test_jit_matches_eager_and_group_sums_are_zero():
  rng = np.random.default_rng(3)
  ids = random_groups(rng, num_groups=5)
  rewards = rng.uniform(size=ids.size).astype(np.float32)
  jitted = jax.jit(advantages.grpo_advantages, static_argnames="num_groups")
  got = np.asarray(jitted(rewards, ids, num_groups=5))
  np.testing.assert_allclose(got, np.asarray(advantages.grpo_advantages(rewards, ids, 5)), rtol=1e-6)
  np.testing.assert_allclose(np.bincount(ids, weights=got), 0.0, atol=1e-4)


def test_padding_rows_get_zero_and_do_not_touch_groups():
  rng = np.random.default_rng(1)
  ids = np.array([0, 0, 0, -1, 1, 1, -1, 1])
  rewards = rng.normal(size=8).astype(np.float32)
  rewards[[3, 6]] = 1e6  # padding garbage must not leak into group statistics
  got = np.asarray(advantages.grpo_advantages(rewards, ids, num_groups=2))
  np.testing.assert_allclose(got, reference_grpo(rewards, ids), rtol=1e-4, atol=1e-5)
  assert got[3] == 0.0 and got[6] == 0.0


def test_one_sample_group_raises_like_upstream_assert():
  with pytest.raises(ValueError, match="at least 2 samples"):
    advantages.grpo_advantages(np.array([1.0, 0.0, 0.5], np.float32), np.array([0, 0, 1]), num_groups=2)


def test_one_sample_group_under_jit_is_nan_like_torch_std():
  jitted = jax.jit(advantages.grpo_advantages, static_argnames="num_groups")
  got = np.asarray(jitted(np.array([1.0, 0.0, 0.5], np.float32), np.array([0, 0, 1]), num_groups=2))
  assert np.isnan(got[2]) and np.isfinite(got[:2]).all()


@pytest.mark.parametrize(
  "bad_ids, message",
  [
    (np.array([0, 0, 2, 2]), "out of range"),
    (np.array([0.0, 0.0, 1.0, 1.0]), "integers"),
  ],
)
def test_bad_group_ids_raise(bad_ids, message):
  with pytest.raises(ValueError, match=message):
    advantages.grpo_advantages(np.zeros(4, np.float32), bad_ids, num_groups=2)
