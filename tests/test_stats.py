"""vrrl_jax.stats against independent references: the Wilson interval as the roots of its defining quadratic, the
bootstrap against Wilson on one binomial sample, and the slope against numpy's least squares."""

import numpy as np
import pytest

from vrrl_jax import stats


@pytest.mark.parametrize("successes, n", [(0, 10), (3, 10), (81, 263), (250, 250), (120, 250)])
def test_wilson_interval_solves_its_quadratic(successes, n):
  # The Wilson interval is the set of p with (p_hat - p)^2 <= z^2 p (1 - p) / n: the roots of
  # (1 + z^2/n) p^2 - (2 p_hat + z^2/n) p + p_hat^2 = 0.
  z, p_hat = stats.Z95, successes / n
  roots = np.sort(np.roots([1 + z * z / n, -(2 * p_hat + z * z / n), p_hat * p_hat]).real)
  np.testing.assert_allclose(stats.wilson_interval(successes, n), np.clip(roots, 0, 1), atol=1e-12)


def test_wilson_interval_refuses_impossible_counts():
  with pytest.raises(ValueError, match="successes <= n"):
    stats.wilson_interval(5, 4)


def test_bootstrap_over_maps_matches_wilson_for_one_seed():
  rng = np.random.default_rng(1)
  outcomes = (rng.random(250) < 0.4).astype(float)[None]  # one seed, 250 maps
  reps = stats.bootstrap_means({"arm": {"L3": outcomes}}, num_samples=4000, seed=0)["arm"]
  lo, hi = stats.percentile_interval(reps)
  wlo, whi = stats.wilson_interval(int(outcomes.sum()), 250)
  assert abs(lo - wlo) < 0.012 and abs(hi - whi) < 0.012, ((lo, hi), (wlo, whi))
  assert stats.point_mean({"L3": outcomes}) == outcomes.mean()


def test_bootstrap_pairs_maps_across_arms_and_resamples_seeds():
  rng = np.random.default_rng(2)
  shared = (rng.random((1, 100)) < 0.5).astype(float)
  reps = stats.bootstrap_means({"a": {"g": shared}, "b": {"g": shared.copy()}}, num_samples=500)
  np.testing.assert_array_equal(reps["a"], reps["b"])  # same maps drawn for both arms: the difference is exactly 0

  # Two seeds that disagree completely: the replicates are the seed mixes 0, 1/2 and 1, in proportion 1:2:1.
  split = {"g": np.stack([np.zeros(40), np.ones(40)])}
  reps = stats.bootstrap_means({"a": split}, num_samples=4000)["a"]
  values, counts = np.unique(reps, return_counts=True)
  np.testing.assert_array_equal(values, [0.0, 0.5, 1.0])
  np.testing.assert_allclose(counts / 4000, [0.25, 0.5, 0.25], atol=0.03)


def test_bootstrap_weights_groups_by_their_maps_and_checks_shapes():
  arms = {"a": {"x": np.ones((2, 30)), "y": np.zeros((2, 10))}}
  np.testing.assert_allclose(stats.bootstrap_means(arms, num_samples=50)["a"], 0.75)
  assert stats.point_mean(arms["a"]) == 0.75
  with pytest.raises(ValueError, match="same groups and map counts"):
    stats.bootstrap_means({"a": {"x": np.ones((1, 30))}, "b": {"x": np.ones((1, 29))}})
  with pytest.raises(ValueError, match=r"\[seeds, maps\]"):
    stats.bootstrap_means({"a": {"x": np.ones(30)}})


def test_slope_test_matches_least_squares():
  rng = np.random.default_rng(3)
  rising = 0.01 * np.arange(40) + 0.05 * rng.standard_normal(40)
  slope, p = stats.slope_test(rising)
  assert slope == pytest.approx(np.polyfit(np.arange(40), rising, 1)[0], rel=1e-10)
  assert p < 0.05
  _, p_flat = stats.slope_test(0.05 * rng.standard_normal(40))
  assert p_flat > 0.05
  with pytest.raises(ValueError, match="at least 3"):
    stats.slope_test([1.0, 2.0])
