"""Rollout-mode draws and RandomTurnMasking against VRRL_SPEC section 3, with numpy references."""

import dataclasses

import numpy as np
import pytest

from vrrl_jax.rl import modes

NORMAL, RANDOM_START, PREFIX_BUFFER = "normal", "random_start", "prefix_buffer"
# Chi-square critical values at p = 0.001 (df = categories - 1), so a correct sampler fails 1 in 1000.
CHI2_CRITICAL_P001 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467}


def chi_square(counts, probabilities):
  counts, probabilities = np.asarray(counts, float), np.asarray(probabilities, float)
  expected = counts.sum() * probabilities
  return float((((counts - expected) ** 2) / expected).sum())


def mode_counts(drawn):
  return np.array([(drawn == m).sum() for m in (NORMAL, RANDOM_START, PREFIX_BUFFER)])


@pytest.mark.parametrize(
  "weights, can_sample, probabilities",
  [
    ((0.0, 0.6, 0.4), True, (0.0, 0.6, 0.4)),  # released recipe
    ((0.0, 0.6, 0.4), False, (0.0, 1.0, 0.0)),  # buffer not ready: renormalised over the rest
    ((1.0, 2.0, 3.0), True, (1 / 6, 2 / 6, 3 / 6)),
    ((1.0, 2.0, 3.0), False, (1 / 3, 2 / 3, 0.0)),
    ((0.0, 0.0, 1.0), False, (1.0, 0.0, 0.0)),  # nothing enabled: normal, as upstream
    ((0.0, 0.0, 0.0), True, (1.0, 0.0, 0.0)),
  ],
)
def test_mode_frequencies(weights, can_sample, probabilities):
  cfg = modes.ModeConfig(normal_weight=weights[0], random_start_weight=weights[1], prefix_buffer_weight=weights[2])
  drawn = modes.draw_modes(20000, cfg, can_sample, np.random.default_rng(0))
  counts = mode_counts(drawn)
  probabilities = np.array(probabilities)
  assert (counts[probabilities == 0] == 0).all()
  support = probabilities > 0
  if support.sum() > 1:
    stat = chi_square(counts[support], probabilities[support])
    assert stat < CHI2_CRITICAL_P001[int(support.sum()) - 1], (counts, stat)
  # random_init (a task's injected roll-in) is off unless weighted.
  np.testing.assert_allclose(list(modes.mode_probabilities(cfg, can_sample).values()), [*probabilities, 0.0])


def test_draws_are_reproducible_from_the_seed():
  cfg = modes.ModeConfig()
  a = modes.draw_modes(64, cfg, True, np.random.default_rng(5))
  b = modes.draw_modes(64, cfg, True, np.random.default_rng(5))
  np.testing.assert_array_equal(a, b)
  assert a.shape == (64,)


def test_demote_unserved_buffer_questions():
  drawn = np.array([PREFIX_BUFFER, RANDOM_START, PREFIX_BUFFER, PREFIX_BUFFER, NORMAL])
  got = modes.demote_unserved_buffer_questions(drawn, num_entries=1)
  np.testing.assert_array_equal(got, [PREFIX_BUFFER, RANDOM_START, NORMAL, NORMAL, NORMAL])
  np.testing.assert_array_equal(drawn[2], PREFIX_BUFFER)  # input not modified


def build_sample(rng, num_turns, seq_len):
  """A conversation laid out like the trainer's: prompt, then per turn an assistant header (no loss),
  the assistant's tokens (turn t), and an environment turn (no loss); right-padded."""
  prompt_len = int(rng.integers(2, 6))
  turn_index, assistant = [-1] * prompt_len, [0] * prompt_len
  for t in range(num_turns):
    turn_index += [-1, -1]
    assistant += [0, 0]
    n = int(rng.integers(1, 6))
    turn_index += [t] * n
    assistant += [1] * n
    if t < num_turns - 1:
      m = int(rng.integers(1, 4))
      turn_index += [-1] * m
      assistant += [0] * m
  assert len(turn_index) <= seq_len
  pad = seq_len - len(turn_index)
  return np.array(assistant + [0] * pad, np.int32), np.array(turn_index + [-1] * pad, np.int64)


def build_batch(rng, turn_counts, seq_len=80):
  pairs = [build_sample(rng, t, seq_len) for t in turn_counts]
  return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), np.array(turn_counts, np.int64)


def reference_mask(assistant, turn_index, k):
  """Spec: zero the loss mask of assistant turns < k."""
  return np.where((turn_index >= 0) & (turn_index < k[:, None]), 0, assistant)


@pytest.mark.parametrize("turn_min, num_turns", [(0, 4), (1, 4), (2, 5), (0, 2)])
def test_random_start_k_is_uniform_on_the_right_range(turn_min, num_turns):
  rng = np.random.default_rng(turn_min * 10 + num_turns)
  batch = 3000
  assistant, turn_index, turns = build_batch(rng, [num_turns] * 20)
  assistant, turn_index = np.tile(assistant, (batch // 20, 1)), np.tile(turn_index, (batch // 20, 1))
  turns = np.full(batch, num_turns)
  cfg = modes.ModeConfig(random_start_turn_min=turn_min)
  mask, k = modes.loss_mask(
    assistant, turn_index, turns, [RANDOM_START] * batch, np.zeros(batch, np.int64), cfg, np.random.default_rng(1)
  )
  support = np.arange(turn_min, num_turns)
  assert set(np.unique(k)) == set(support)
  counts = np.array([(k == v).sum() for v in support])
  if support.size > 1:
    assert chi_square(counts, np.full(support.size, 1 / support.size)) < CHI2_CRITICAL_P001[support.size - 1]
  np.testing.assert_array_equal(mask, reference_mask(assistant, turn_index, k))


def test_masking_zeroes_exactly_the_turns_before_k_on_ragged_batches():
  rng = np.random.default_rng(3)
  turn_counts = rng.integers(1, 7, size=64).tolist()
  assistant, turn_index, turns = build_batch(rng, turn_counts)
  mask, k = modes.loss_mask(
    assistant,
    turn_index,
    turns,
    [RANDOM_START] * 64,
    np.zeros(64, np.int64),
    modes.ModeConfig(),
    np.random.default_rng(0),
  )
  np.testing.assert_array_equal(mask, reference_mask(assistant, turn_index, k))
  assert ((k >= 0) & (k <= np.maximum(turns - 1, 0))).all()
  # The final turn always keeps its loss.
  for i in range(64):
    final = turn_index[i] == turns[i] - 1
    np.testing.assert_array_equal(mask[i][final], assistant[i][final])


def test_single_turn_and_normal_samples_are_untouched():
  rng = np.random.default_rng(4)
  assistant, turn_index, turns = build_batch(rng, [1, 1, 3, 5])
  sample_modes = [RANDOM_START, RANDOM_START, NORMAL, NORMAL]
  mask, k = modes.loss_mask(
    assistant,
    turn_index,
    turns,
    sample_modes,
    np.zeros(4, np.int64),
    modes.ModeConfig(random_start_turn_min=1),
    np.random.default_rng(0),
  )
  np.testing.assert_array_equal(mask, assistant)
  np.testing.assert_array_equal(k, 0)


def test_mask_all_until_final_keeps_only_the_last_turn():
  rng = np.random.default_rng(5)
  assistant, turn_index, turns = build_batch(rng, [1, 2, 3, 6])
  cfg = modes.ModeConfig(mask_all_until_final=True)
  mask, k = modes.loss_mask(
    assistant, turn_index, turns, [RANDOM_START] * 4, np.zeros(4, np.int64), cfg, np.random.default_rng(0)
  )
  np.testing.assert_array_equal(k, [0, 1, 2, 5])
  np.testing.assert_array_equal(mask, np.where(turn_index == (turns - 1)[:, None], assistant, 0))


def test_turn_min_above_last_turn_clamps_to_final_turn():
  rng = np.random.default_rng(6)
  assistant, turn_index, turns = build_batch(rng, [2, 3])
  mask, k = modes.loss_mask(
    assistant,
    turn_index,
    turns,
    [RANDOM_START] * 2,
    np.zeros(2, np.int64),
    modes.ModeConfig(random_start_turn_min=4),
    np.random.default_rng(0),
  )
  np.testing.assert_array_equal(k, [1, 2])
  np.testing.assert_array_equal(mask, reference_mask(assistant, turn_index, k))


@pytest.mark.parametrize("mask_prefix", [True, False])
def test_buffer_prefix_masking(mask_prefix):
  rng = np.random.default_rng(7)
  assistant, turn_index, turns = build_batch(rng, [3, 4, 2, 3])
  sample_modes = [PREFIX_BUFFER, PREFIX_BUFFER, PREFIX_BUFFER, RANDOM_START]
  prefix_turns = np.array([2, 1, 2, 0])  # the third sample produced no new turn (degenerate)
  cfg = modes.ModeConfig(mask_buffer_prefix=mask_prefix, mask_all_until_final=True)
  mask, start = modes.loss_mask(assistant, turn_index, turns, sample_modes, prefix_turns, cfg, np.random.default_rng(0))
  np.testing.assert_array_equal(start, [2, 1, 2, 2])
  expected_k = np.array([2, 1, 2, 2]) if mask_prefix else np.array([0, 0, 0, 2])
  np.testing.assert_array_equal(mask, reference_mask(assistant, turn_index, expected_k))
  if mask_prefix:
    assert mask[2].sum() == 0  # nothing new was generated: no loss at all
  assert modes.ModeConfig().mask_buffer_prefix  # default: the replayed prefix carries no loss


@pytest.mark.parametrize("mask_prefix", [True, False])
def test_injected_roll_in_turns_never_carry_loss(mask_prefix):
  rng = np.random.default_rng(9)
  assistant, turn_index, turns = build_batch(rng, [3, 2, 3])
  sample_modes = ["random_init", "random_init", NORMAL]
  cfg = modes.ModeConfig(mask_buffer_prefix=mask_prefix)
  mask, start = modes.loss_mask(
    assistant, turn_index, turns, sample_modes, np.array([1, 1, 0]), cfg, np.random.default_rng(0)
  )
  # The injected first turn is not the policy's sample: masked whatever mask_buffer_prefix says.
  np.testing.assert_array_equal(mask, reference_mask(assistant, turn_index, np.array([1, 1, 0])))
  np.testing.assert_array_equal(start, [1, 1, 0])
  assert modes.start_turn_metrics(start, np.array(sample_modes))["random_restart/avg_start_turn"] == 0.0


def test_random_init_mode_is_drawn_only_when_weighted():
  cfg = modes.ModeConfig(normal_weight=1.0, random_start_weight=0.0, prefix_buffer_weight=0.0, random_init_weight=3.0)
  drawn = modes.draw_modes(4000, cfg, True, np.random.default_rng(1))
  share = float(np.mean(drawn == "random_init"))
  assert abs(share - 0.75) < 0.03, share
  # Off by default; with weight 0 the draws are the three-mode draws exactly (FrozenLake runs unchanged).
  three = modes.draw_modes(500, modes.ModeConfig(), True, np.random.default_rng(2))
  assert "random_init" not in set(three.tolist())


def test_masking_is_reproducible_and_does_not_modify_input():
  rng = np.random.default_rng(8)
  assistant, turn_index, turns = build_batch(rng, [4] * 16)
  before = assistant.copy()
  args = (assistant, turn_index, turns, [RANDOM_START] * 16, np.zeros(16, np.int64), modes.ModeConfig())
  a = modes.loss_mask(*args, np.random.default_rng(9))
  b = modes.loss_mask(*args, np.random.default_rng(9))
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  np.testing.assert_array_equal(assistant, before)


def test_start_turn_metrics_match_numpy():
  start = np.array([0, 1, 1, 3, 2, 9, 0, 1])
  sample_modes = np.array([RANDOM_START] * 5 + [PREFIX_BUFFER] + [NORMAL] * 2)
  got = modes.start_turn_metrics(start, sample_modes)
  kept = np.array([0, 1, 1, 3, 2, 0, 1])
  assert got["random_restart/avg_start_turn"] == pytest.approx(kept.mean())
  for turn in range(1, 9):
    assert got[f"random_restart/start_turn_{turn}_ratio"] == pytest.approx((kept == turn).mean())
  assert modes.start_turn_metrics(np.array([2]), np.array([PREFIX_BUFFER])) == {}


def test_loss_mask_validation():
  rng = np.random.default_rng(10)
  assistant, turn_index, turns = build_batch(rng, [2, 3])
  zeros = np.zeros(2, np.int64)
  cfg, gen = modes.ModeConfig(), np.random.default_rng(0)
  with pytest.raises(ValueError, match="unknown rollout modes"):
    modes.loss_mask(assistant, turn_index, turns, [RANDOM_START, "greedy"], zeros, cfg, gen)
  with pytest.raises(ValueError, match="turn_index >= num_turns"):
    modes.loss_mask(assistant, turn_index, turns - 1, [RANDOM_START] * 2, zeros, cfg, gen)
  bad = assistant.copy()
  bad[0, np.flatnonzero(turn_index[0] == -1)[0]] = 1
  with pytest.raises(ValueError, match="turn_index -1"):
    modes.loss_mask(bad, turn_index, turns, [RANDOM_START] * 2, zeros, cfg, gen)
  with pytest.raises(ValueError, match="num_prefix_turns must be 0"):
    modes.loss_mask(assistant, turn_index, turns, [RANDOM_START] * 2, np.array([1, 0]), cfg, gen)
  with pytest.raises(ValueError, match="exceeds num_turns"):
    modes.loss_mask(assistant, turn_index, turns, [PREFIX_BUFFER] * 2, np.array([3, 0]), cfg, gen)
  with pytest.raises(ValueError, match="Generator"):
    modes.loss_mask(assistant, turn_index, turns, [RANDOM_START] * 2, zeros, cfg, 0)


@pytest.mark.parametrize(
  "field, value",
  [
    ("normal_weight", -1.0),
    ("random_start_weight", float("inf")),
    ("prefix_buffer_weight", True),
    ("random_start_turn_min", -1),
    ("random_start_turn_min", 1.5),
    ("mask_buffer_prefix", 1),
  ],
)
def test_config_validation(field, value):
  with pytest.raises(ValueError, match=field):
    dataclasses.replace(modes.ModeConfig(), **{field: value})


def test_released_defaults():
  cfg = modes.ModeConfig()
  assert (cfg.normal_weight, cfg.random_start_weight, cfg.prefix_buffer_weight) == (0.0, 0.6, 0.4)
  assert cfg.random_start_turn_min == 0 and not cfg.mask_all_until_final
