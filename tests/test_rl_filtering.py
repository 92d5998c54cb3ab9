"""Online group filtering and the refill loop (VRRL_SPEC section 4 step 3), against numpy references."""

import dataclasses

import numpy as np
import pytest

from vrrl_jax.rl import filtering


def reference_keep(overall, group_ids, num_groups, low, high):
  """Spec: drop groups whose mean overall reward is <= low or >= high."""
  keep = np.zeros(num_groups, bool)
  for g in range(num_groups):
    mean = float(np.mean(overall[group_ids == g]))
    keep[g] = not (mean <= low or mean >= high)
  return keep


@pytest.mark.parametrize("seed", range(4))
def test_keep_groups_matches_reference_on_random_rewards(seed):
  rng = np.random.default_rng(seed)
  ids = np.repeat(np.arange(40), 8)
  rng.shuffle(ids)
  overall = rng.choice([0.0, 0.1, 1.0, 1.09, 0.55], size=ids.size)
  overall[ids == 0] = 0.0  # all fail
  overall[ids == 1] = 1.0  # all succeed
  got = filtering.keep_groups(overall, ids, 40, filtering.FilterConfig())
  np.testing.assert_array_equal(got, reference_keep(overall, ids, 40, 0.01, 0.99))
  assert not got[0] and not got[1]


def test_thresholds_are_exclusive_at_the_boundary():
  # Means exactly at 0.01 and 0.99 are dropped; just inside is kept.
  overall = np.array([0.01, 0.01, 0.99, 0.99, 0.0, 0.0200001, 0.98, 0.98, 1.2, 0.0])
  ids = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
  got = filtering.keep_groups(overall, ids, 5, filtering.FilterConfig())
  np.testing.assert_array_equal(got, [False, False, True, True, True])
  np.testing.assert_array_equal(got, reference_keep(overall, ids, 5, 0.01, 0.99))


def test_custom_thresholds_and_disabled_filter():
  overall = np.array([0.2, 0.2, 0.5, 0.5, 0.9, 0.9])
  ids = np.array([0, 0, 1, 1, 2, 2])
  cfg = filtering.FilterConfig(low=0.2, high=0.9)
  np.testing.assert_array_equal(filtering.keep_groups(overall, ids, 3, cfg), [False, True, False])
  np.testing.assert_array_equal(
    filtering.keep_groups(overall, ids, 3, filtering.FilterConfig(enabled=False)), [True, True, True]
  )


class FakeRollouts:
  """Draws question groups whose mean reward comes from a scripted keep/drop pattern."""

  def __init__(self, pattern_per_draw):
    self.pattern_per_draw = list(pattern_per_draw)
    self.calls = 0

  def __call__(self):
    pattern = self.pattern_per_draw[min(self.calls, len(self.pattern_per_draw) - 1)]
    groups = [
      {"draw": self.calls, "index": i, "overall": np.array([0.0, 1.0] if ok else [0.0, 0.0])}
      for i, ok in enumerate(pattern)
    ]
    self.calls += 1
    return groups


def overall_of(group):
  return group["overall"]


def test_refill_keeps_drawing_until_full_and_cuts_the_surplus():
  draw = FakeRollouts([[True, False, False, True], [False, False, False, False], [True, True, True, False]])
  result = filtering.fill_groups(draw, overall_of, num_groups=4, config=filtering.FilterConfig())
  assert draw.calls == 3 and result.num_tries == 3 and not result.exhausted
  assert [(g["draw"], g["index"]) for g in result.groups] == [(0, 0), (0, 3), (2, 0), (2, 1)]
  assert result.num_drawn == 12 and result.num_dropped == 2 + 4 + 1


def test_try_limit_returns_what_was_kept_without_raising():
  draw = FakeRollouts([[False, False, False, False]])
  result = filtering.fill_groups(draw, overall_of, num_groups=4, config=filtering.FilterConfig(max_tries=20))
  assert draw.calls == 20 and result.exhausted and result.groups == []
  assert result.metrics()["filter/exhausted"] == 1.0 and result.metrics()["filter/num_kept"] == 0.0

  draw = FakeRollouts([[False, True, False, False]])
  result = filtering.fill_groups(draw, overall_of, num_groups=8, config=filtering.FilterConfig(max_tries=3))
  assert draw.calls == 3 and result.exhausted and len(result.groups) == 3
  assert result.num_drawn == 12 and result.num_dropped == 9


def test_disabled_filter_takes_one_draw():
  draw = FakeRollouts([[False, False, True, False]])
  result = filtering.fill_groups(draw, overall_of, num_groups=4, config=filtering.FilterConfig(enabled=False))
  assert draw.calls == 1 and len(result.groups) == 4 and not result.exhausted and result.num_dropped == 0


@pytest.mark.parametrize(
  "field, value",
  [
    ("low", 0.99),
    ("high", float("nan")),
    ("max_tries", 0),
    ("max_tries", 2.0),
    ("enabled", 1),
  ],
)
def test_config_validation(field, value):
  with pytest.raises(ValueError, match=field):
    dataclasses.replace(filtering.FilterConfig(), **{field: value})


def test_input_validation():
  cfg = filtering.FilterConfig()
  with pytest.raises(ValueError, match="no samples"):
    filtering.keep_groups(np.array([0.5, 0.5]), np.array([0, 0]), 2, cfg)
  with pytest.raises(ValueError, match="finite"):
    filtering.keep_groups(np.array([np.nan, 0.5]), np.array([0, 0]), 1, cfg)
  with pytest.raises(ValueError, match="no groups"):
    filtering.fill_groups(lambda: [], overall_of, 2, cfg)


def test_released_defaults():
  cfg = filtering.FilterConfig()
  assert (cfg.enabled, cfg.low, cfg.high, cfg.max_tries) == (True, 0.01, 0.99, 20)
