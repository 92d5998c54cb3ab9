"""The FrozenLake reflection reward, one test per rule of VRRL_SPEC section 2.

Expected values are written as the spec's arithmetic on hand-made maps (PRs worked out by hand in
the comments), and cross-checked against upstream's shared data: the optimal routes of the 1,000 eval
maps and the BFS ``distance_map`` that upstream ships with each of its 3,000 training maps.
"""

import dataclasses
import random

import ml_collections
import numpy as np
import pytest

from vrrl_jax.tasks.frozenlake import release_data
from vrrl_jax.tasks.frozenlake.maps import MapSpecError, distance_map, parse_spec
from vrrl_jax.tasks.frozenlake import reward as fl
from vrrl_jax.tasks.frozenlake.reward import METRIC_KEYS, BufferFields, RewardConfig, score_batch, score_turns

# 3x3, no holes, S top-left, G bottom-right: n_opt = 4. BFS distance = Manhattan distance to (2, 2).
OPEN = {"layout": ["SFF", "FFF", "FFG"], "start_pos": 0, "target_pos": 8, "level": 3}
# Same with a hole in the centre: still n_opt = 4 around the edge.
HOLE = {"layout": ["SFF", "FHF", "FFG"], "start_pos": 0, "target_pos": 8, "level": 3}
# G at (1, 1), reached by down, right (n_opt = 2); right of G is a hole.
PASS = {"layout": ["SHHH", "FGHF", "FFFH", "FFHH"], "start_pos": 0, "target_pos": 5, "level": 4}
# G walled in by holes.
UNREACHABLE = {"layout": ["SFH", "FHH", "HHG"], "start_pos": 0, "target_pos": 8, "level": 3}

OPT = "right right down down"  # PR 1, EM on OPEN
OPT2 = "down down right right"  # the other optimal route, PR 1, EM
HALF = "down right"  # reaches (1, 1): PR 2/4 = 0.5
THREE_Q = "down right down"  # reaches (2, 1): PR 3/4 = 0.75
BROKEN = "right right up up"  # 2 good moves, then off-grid: PR 0.5


def answer(body):
  return f"<ANSWER>{body}</ANSWER>"


def revise(body):
  return f"<THINK>the image shows the route fails</THINK><ANSWER>{body}</ANSWER>"


def final(body):
  return f"<FINAL>{body}</FINAL>"


def commit(body):
  """The shortest well-formed transcript committing ``body``: propose, then confirm."""
  return [answer(body), final(body)]


# --- format gate ------------------------------------------------------------------------------


def test_well_formed_revision_passes_gate_and_em_pays_correct_value():
  out = score_turns([answer(HALF), revise(OPT), final(OPT)], OPEN)
  assert out["format"] == 0.1
  assert out["em"] == 1.0
  assert out["overall"] == 1.0  # correct_value
  assert out["n_turns"] == 3.0
  assert set(out) == set(METRIC_KEYS)


def test_gate_unparseable_turn():
  # A bad token in the FINAL: the turn does not parse. The committed answer falls back to the last
  # route, which is EM, but the gate zeroes the reward.
  out = score_turns([answer(OPT), final("right right down dwn")], OPEN)
  assert (out["format"], out["em"], out["overall"]) == (0.0, 1.0, 0.0)
  # A turn with no tag at all, in the middle.
  out = score_turns([answer(HALF), "I will go right.", revise(OPT), final(OPT)], OPEN)
  assert (out["format"], out["overall"]) == (0.0, 0.0)


def test_gate_first_turn_must_not_think():
  assert score_turns([revise(OPT), final(OPT)], OPEN)["overall"] == 0.0
  assert score_turns(commit(OPT), OPEN)["overall"] == 1.0


def test_gate_first_turn_must_be_a_route():
  out = score_turns([final(OPT)], OPEN)
  assert (out["format"], out["em"], out["overall"]) == (0.0, 1.0, 0.0)


def test_gate_final_must_be_last():
  out = score_turns([answer(OPT), final(OPT), revise(OPT2)], OPEN)
  assert (out["format"], out["overall"]) == (0.0, 0.0)


def test_gate_requires_a_final():
  # Ran out of turns: the last route is the committed answer (EM), but the gate fails.
  out = score_turns([answer(HALF), revise(OPT)], OPEN)
  assert (out["format"], out["em"], out["pr_final"], out["overall"]) == (0.0, 1.0, 1.0, 0.0)


def test_gate_exactly_one_final():
  out = score_turns([answer(OPT), final(OPT), final(OPT)], OPEN)
  assert (out["format"], out["em"], out["overall"]) == (0.0, 1.0, 0.0)
  # Even when the earlier FINAL carries the THINK a middle turn needs.
  out = score_turns([answer(OPT), "<THINK>sure</THINK>" + final(OPT), final(OPT)], OPEN)
  assert (out["format"], out["overall"]) == (0.0, 0.0)


def test_gate_final_must_not_think():
  out = score_turns([answer(OPT), "<THINK>looks right</THINK>" + final(OPT)], OPEN)
  assert (out["format"], out["overall"]) == (0.0, 0.0)


def test_gate_final_must_repeat_the_preceding_route():
  # FINAL edits the answer: the committed (FINAL) route is EM but the transcript is malformed.
  out = score_turns([answer(HALF), final(OPT)], OPEN)
  assert (out["format"], out["em"], out["overall"]) == (0.0, 1.0, 0.0)
  # Repeating an earlier route is not enough: it must be the immediately preceding one.
  out = score_turns([answer(OPT), revise(HALF), final(OPT)], OPEN)
  assert (out["format"], out["overall"]) == (0.0, 0.0)


def test_gate_revision_turns_must_think():
  assert score_turns([answer(HALF), answer(OPT), final(OPT)], OPEN)["overall"] == 0.0
  # An unclosed THINK does not count.
  assert score_turns([answer(HALF), "<THINK>hmm" + answer(OPT), final(OPT)], OPEN)["overall"] == 0.0


def test_gate_no_duplicate_routes():
  out = score_turns([answer(HALF), revise(HALF), final(HALF)], OPEN)
  assert (out["format"], out["overall"]) == (0.0, 0.0)
  # Non-adjacent, and spelled differently (case, commas): still the same action list.
  out = score_turns([answer(HALF), revise(THREE_Q), revise("Down, RIGHT"), final(HALF)], OPEN)
  assert (out["format"], out["overall"]) == (0.0, 0.0)


def test_gate_min_turns():
  assert score_turns(commit(OPT), OPEN, min_turns=2)["overall"] == 1.0
  out = score_turns(commit(OPT), OPEN, min_turns=3)
  assert (out["format"], out["em"], out["overall"]) == (0.0, 1.0, 0.0)
  assert score_turns([answer(HALF), revise(OPT), final(OPT)], OPEN, min_turns=3)["overall"] == 1.0


def test_gate_no_empty_action_list():
  out = score_turns(commit(""), OPEN)
  assert (out["format"], out["overall"]) == (0.0, 0.0)
  out = score_turns([answer(HALF), revise(""), revise(OPT), final(OPT)], OPEN)
  assert (out["format"], out["overall"]) == (0.0, 0.0)


def test_gate_ignores_illegal_moves():
  # An off-grid first proposal is a mistake to recover from, not a format error.
  out = score_turns([answer("up"), revise(OPT), final(OPT)], OPEN)
  assert (out["format"], out["em"], out["overall"]) == (0.1, 1.0, 1.0)


def test_empty_transcript_scores_zero():
  out = score_turns([], OPEN)
  assert out == {key: 0.0 for key in METRIC_KEYS}


def test_whitespace_only_turns_are_not_turns():
  # Upstream's transcript splitter drops whitespace-only assistant turns.
  out = score_turns([answer(OPT), " \n\t", final(OPT)], OPEN)
  assert (out["format"], out["overall"], out["n_turns"]) == (0.1, 1.0, 2.0)


# --- progress rate ----------------------------------------------------------------------------


def test_pr_stops_at_off_grid_move():
  # right: d 4 -> 3 (ok); up: off-grid -> stop. PR = 1/4.
  out = score_turns(commit("right up right down"), OPEN)
  assert out["pr_turn1"] == out["pr_final"] == 1 / 4
  assert out["overall"] == pytest.approx(0.1 + 0.9 * 0.0)  # one route: no reflection, not EM


def test_pr_stops_at_hole():
  # right: d 4 -> 3 (ok); down: the hole at (1, 1) -> stop. PR = 1/4.
  assert score_turns(commit("right down right down"), HOLE)["pr_final"] == 1 / 4


def test_pr_stops_at_a_move_that_does_not_lower_the_distance():
  # down: 4 -> 3 (ok); up: 3 -> 4 -> stop, although the rest would reach the goal. PR = 1/4.
  assert score_turns(commit("down up down right right"), OPEN)["pr_final"] == 1 / 4


def test_pr_overshoot():
  overshoot = OPT + " up"  # the optimal route, then one more move
  off = score_turns(commit(overshoot), OPEN)
  assert (off["pr_final"], off["em"]) == (1.0, 0.0)
  on = score_turns(commit(overshoot), OPEN, pr_overshoot_zero=True)
  assert (on["pr_final"], on["pr_turn1"], on["em"]) == (0.0, 0.0, 0.0)
  # An extra move that leaves the grid is an overshoot too.
  assert score_turns(commit(OPT + " right"), OPEN, pr_overshoot_zero=True)["pr_final"] == 0.0
  # Exact and partial routes are unaffected.
  assert score_turns(commit(OPT), OPEN, pr_overshoot_zero=True)["pr_final"] == 1.0
  assert score_turns(commit(HALF), OPEN, pr_overshoot_zero=True)["pr_final"] == 2 / 4
  # Long but never completing the optimal prefix: not an overshoot, PR 1/4 as without the flag.
  assert score_turns(commit("down up down right right"), OPEN, pr_overshoot_zero=True)["pr_final"] == 1 / 4


def test_em_is_strict():
  # Passes through the goal then steps on: PR 2/2 = 1 (flag off) but not EM.
  out = score_turns(commit("down right right"), PASS)
  assert (out["em"], out["pr_final"]) == (0.0, 1.0)
  assert score_turns(commit("down right"), PASS)["em"] == 1.0
  # Too short, and through a hole.
  assert score_turns(commit(HALF), OPEN)["em"] == 0.0
  assert score_turns(commit("right down down right"), HOLE)["em"] == 0.0


def test_unreachable_goal_scores_all_zero():
  # Upstream returns its floor result (every metric 0, n_turns included) for an unreachable goal.
  assert score_turns(commit("right"), UNREACHABLE) == {key: 0.0 for key in METRIC_KEYS}


# --- reflection -------------------------------------------------------------------------------


def test_reflection_sums_deltas_with_lambda_on_drops():
  # PRs 1/4 -> 3/4 -> 1/4, committed 1/4 (not EM).
  turns = [answer("right"), revise(THREE_Q), revise("down"), final("down")]
  out = score_turns(turns, OPEN, lambda_deg=0.5)
  reflection = (0.75 - 0.25) + 0.5 * (0.25 - 0.75)
  assert out["reflection"] == pytest.approx(reflection)
  assert out["overall"] == pytest.approx(0.1 + 0.9 * reflection)
  assert out["break"] == 0.0
  # lambda 2: 0.5 + 2 * (-0.5) = -0.5, clipped to the default floor 0; a "break".
  out = score_turns(turns, OPEN, lambda_deg=2.0)
  assert (out["reflection"], out["break"]) == (0.0, 1.0)
  assert out["overall"] == pytest.approx(0.1 + 0.9 * 0.0)


def test_reflection_clipped_above_at_one():
  # PRs 0 -> 1 -> 0 -> 1 (overshoots: PR 1, not EM); lambda 0.5: 1 - 0.5 + 1 = 1.5 -> 1.
  turns = [answer("up"), revise(OPT + " up"), revise("left"), revise(OPT2 + " up"), final(OPT2 + " up")]
  out = score_turns(turns, OPEN, lambda_deg=0.5)
  assert (out["reflection"], out["em"]) == (1.0, 0.0)
  assert out["overall"] == pytest.approx(0.1 + 0.9 * 1.0)


def test_reflection_lower_clip_surfaces_breaks():
  # PR 1 -> 0.5 and the broken route is committed; lambda 1: raw sum -0.5.
  turns = [answer(OPT), revise(BROKEN), final(BROKEN)]
  out = score_turns(turns, OPEN, reflect_lower_clip=-0.05)
  assert (out["reflection"], out["break"], out["em_turn1"], out["em"]) == (-0.05, 1.0, 1.0, 0.0)
  assert out["overall"] == pytest.approx(0.1 + 0.9 * -0.05)
  out = score_turns(turns, OPEN, reflect_lower_clip=-1.0)
  assert out["reflection"] == pytest.approx(-0.5)
  assert out["overall"] == pytest.approx(0.1 + 0.9 * -0.5)


def test_reflection_needs_two_routes():
  out = score_turns(commit(HALF), OPEN, reflect_lower_clip=-0.5, lambda_deg=3.0)
  assert (out["reflection"], out["break"]) == (0.0, 0.0)
  # The FINAL is not a route: a FINAL that edits the answer adds no delta.
  out = score_turns([answer(HALF), final("down")], OPEN, reflect_lower_clip=-0.5)
  assert (out["reflection"], out["break"]) == (0.0, 0.0)


# --- EM branch --------------------------------------------------------------------------------


def test_em_reflect_bonus_discounted_per_revision():
  kw = dict(em_reflect_bonus_weight=0.2, em_reflect_step_discount=0.7)
  # PRs 0.5 -> 1: reflection 0.5, one revision.
  out = score_turns([answer(HALF), revise(OPT), final(OPT)], OPEN, **kw)
  assert out["overall"] == pytest.approx(1.0 + 0.2 * (1.0 - 0.5) * 0.7**1)
  assert out["outcome"] == 1.0
  # PRs 0.5 -> 0.75 -> 1: reflection 0.5, two revisions.
  out = score_turns([answer(HALF), revise(THREE_Q), revise(OPT), final(OPT)], OPEN, **kw)
  assert out["overall"] == pytest.approx(1.0 + 0.2 * ((0.75 - 0.5) + (1.0 - 0.75)) * 0.7**2)
  # Correct at once: no reflection, no bonus.
  assert score_turns(commit(OPT), OPEN, **kw)["overall"] == 1.0


def test_em_reflect_bonus_only_for_positive_reflection():
  # PRs 1 (overshoot) -> 0.5 -> 1 (EM); lambda 2: 2 * -0.5 + 0.5 = -0.5, floored at -0.1.
  turns = [answer(OPT + " up"), revise(HALF), revise(OPT), final(OPT)]
  out = score_turns(turns, OPEN, lambda_deg=2.0, reflect_lower_clip=-0.1, em_reflect_bonus_weight=0.2)
  assert (out["reflection"], out["break"], out["em"]) == (-0.1, 1.0, 1.0)
  assert out["overall"] == 1.0  # correct_value, no negative bonus


def test_step_cost_per_revision():
  out = score_turns([answer(HALF), revise(OPT), final(OPT)], OPEN, step_cost=0.05)
  assert out["step_cost"] == pytest.approx(0.05 * 1)
  assert out["overall"] == pytest.approx(1.0 - 0.05 * 1)
  out = score_turns([answer(HALF), revise(THREE_Q), revise(OPT), final(OPT)], OPEN, step_cost=0.05)
  assert out["overall"] == pytest.approx(1.0 - 0.05 * 2)
  assert score_turns(commit(OPT), OPEN, step_cost=0.05)["step_cost"] == 0.0


def test_step_cost_churn_only_taxes_revisions_after_a_correct_route():
  kw = dict(step_cost=0.05, step_cost_churn_only=True)
  # PRs 0.5 -> 1: the revision found the answer; nothing after it.
  out = score_turns([answer(HALF), revise(OPT), final(OPT)], OPEN, **kw)
  assert (out["step_cost"], out["overall"]) == (0.0, 1.0)
  # PRs 0.5 -> 1 -> 1: one route after the first correct one.
  out = score_turns([answer(HALF), revise(OPT2), revise(OPT), final(OPT)], OPEN, **kw)
  assert out["overall"] == pytest.approx(1.0 - 0.05 * 1)


def test_step_cost_only_on_well_formed_em():
  out = score_turns(commit(HALF), OPEN, step_cost=0.5)  # not EM
  assert (out["step_cost"], out["overall"]) == (0.0, pytest.approx(0.1))
  out = score_turns([answer(HALF), answer(OPT), final(OPT)], OPEN, step_cost=0.5)  # EM, gate fails
  assert (out["step_cost"], out["overall"]) == (0.0, 0.0)


def test_step_cost_stacks_with_reflect_bonus_in_released_recipe():
  out = score_turns([answer(HALF), revise(OPT), final(OPT)], OPEN, **dataclass_kwargs(RewardConfig.released()))
  assert out["overall"] == pytest.approx(1.0 + 0.1 * (1.0 - 0.5) * 1.0**1 - 0.01 * 1)


def test_correct_value_is_the_em_reward():
  out = score_turns(commit(OPT), OPEN, correct_value=2.0)
  assert (out["overall"], out["outcome"]) == (2.0, 2.0)


# --- committed answer -------------------------------------------------------------------------


def test_committed_answer_is_the_final():
  # A FINAL that differs from the route: the FINAL is what is committed (and the gate fails).
  out = score_turns([answer(OPT), final(HALF)], OPEN)
  assert (out["em"], out["pr_final"], out["em_turn1"], out["pr_turn1"]) == (0.0, 0.5, 1.0, 1.0)
  # Of several FINALs, the last.
  out = score_turns([answer(HALF), final(HALF), final(OPT)], OPEN)
  assert (out["em"], out["pr_final"]) == (1.0, 1.0)


def test_committed_answer_falls_back_to_last_route():
  out = score_turns([answer(OPT), revise(HALF)], OPEN)
  assert (out["em"], out["pr_final"]) == (0.0, 0.5)
  out = score_turns([answer(HALF), revise(OPT), final("right right down sideways")], OPEN)
  assert (out["em"], out["pr_final"]) == (1.0, 1.0)


# --- pr outcome mode --------------------------------------------------------------------------


def test_pr_outcome_mode():
  # PRs 0.5 -> 0.75, committed 0.75: reflection 0.25.
  turns = [answer(HALF), revise(THREE_Q), final(THREE_Q)]
  out = score_turns(turns, OPEN, outcome_reward="pr", outcome_weight=0.5)
  assert out["outcome"] == pytest.approx(0.5 * 0.75)
  assert out["overall"] == pytest.approx(min(1.0, 0.1 + 0.9 * 0.25 + 0.5 * 0.75))
  # Capped at correct_value.
  out = score_turns(turns, OPEN, outcome_reward="pr", outcome_weight=2.0)
  assert out["overall"] == min(1.0, 0.1 + 0.9 * 0.25 + 2.0 * 0.75)
  # EM still earns correct_value; the gate still zeroes.
  out = score_turns([answer(HALF), revise(OPT), final(OPT)], OPEN, outcome_reward="pr")
  assert (out["overall"], out["outcome"]) == (1.0, 1.0)
  assert score_turns([answer(HALF), answer(THREE_Q), final(THREE_Q)], OPEN, outcome_reward="pr")["overall"] == 0.0
  # The em mode ignores outcome_weight.
  assert score_turns(turns, OPEN, outcome_weight=0.5)["overall"] == pytest.approx(0.1 + 0.9 * 0.25)


# --- decision bonus ---------------------------------------------------------------------------


def buffer(kind, num_turns=1):
  return dict(is_prefix_buffer_rollout=True, prefix_buffer_type=kind, prefix_buffer_num_turns=num_turns)


def test_decision_bonus_wrong_prefix():
  bonus = dict(prefix_buffer_decision_bonus=0.3)
  # Revises and gets it right: +B.
  out = score_turns([answer(HALF), revise(OPT), final(OPT)], OPEN, **bonus, **buffer("wrong"))
  assert out["decision_bonus"] == 0.3
  assert out["overall"] == pytest.approx(1.0 + 0.3)
  # Revises but stays wrong: no bonus.
  out = score_turns([answer(HALF), revise(THREE_Q), final(THREE_Q)], OPEN, **bonus, **buffer("wrong"))
  assert out["decision_bonus"] == 0.0
  assert out["overall"] == pytest.approx(0.1 + 0.9 * 0.25)
  # Re-commits the wrong answer at once: -B, below the format floor.
  out = score_turns(commit(HALF), OPEN, **bonus, **buffer("wrong"))
  assert out["decision_bonus"] == -0.3
  assert out["overall"] == pytest.approx(0.1 + 0.9 * 0.0 - 0.3)
  # A two-turn prefix: the first new turn is the third.
  out = score_turns([answer(HALF), revise(THREE_Q), revise(OPT), final(OPT)], OPEN, **bonus, **buffer("wrong", 2))
  assert out["overall"] == pytest.approx(1.0 + 0.3)


def test_decision_bonus_right_prefix():
  bonus = dict(prefix_buffer_decision_bonus=0.3)
  out = score_turns(commit(OPT), OPEN, **bonus, **buffer("right"))
  assert out["overall"] == pytest.approx(1.0 + 0.3)
  # Revising a correct prefix, even to another optimal route: -B.
  out = score_turns([answer(OPT), revise(OPT2), final(OPT2)], OPEN, **bonus, **buffer("right"))
  assert (out["em"], out["decision_bonus"]) == (1.0, -0.3)
  assert out["overall"] == pytest.approx(1.0 - 0.3)
  # Committing at once pays only when the committed route is EM (the label is not trusted).
  out = score_turns(commit(HALF), OPEN, **bonus, **buffer("right"))
  assert out["decision_bonus"] == 0.0
  assert out["overall"] == pytest.approx(0.1 + 0.9 * 0.0)


def test_decision_bonus_not_paid():
  turns = [answer(HALF), revise(OPT), final(OPT)]
  # Disabled, not a buffer rollout, gate failed, or no new turn after the prefix.
  assert score_turns(turns, OPEN, **buffer("wrong"))["decision_bonus"] == 0.0
  not_buffer = dict(is_prefix_buffer_rollout=False, prefix_buffer_type="wrong", prefix_buffer_num_turns=1)
  assert score_turns(turns, OPEN, prefix_buffer_decision_bonus=0.3, **not_buffer)["decision_bonus"] == 0.0
  out = score_turns([answer(HALF), final(OPT)], OPEN, prefix_buffer_decision_bonus=0.3, **buffer("wrong"))
  assert (out["decision_bonus"], out["overall"]) == (0.0, 0.0)
  out = score_turns(commit(OPT), OPEN, prefix_buffer_decision_bonus=0.3, **buffer("right", 2))
  assert (out["decision_bonus"], out["overall"]) == (0.0, 1.0)


# --- options and errors -----------------------------------------------------------------------


def dataclass_kwargs(config):
  return {name: getattr(config, name) for name in fl._CONFIG_FIELDS}


def test_released_recipe_matches_spec():
  config = RewardConfig.released()
  assert (config.lambda_deg, config.reflect_weight, config.reflect_lower_clip) == (0.5, 0.9, 0.0)
  assert (config.em_reflect_bonus_weight, config.em_reflect_step_discount, config.step_cost) == (0.1, 1.0, 0.01)
  assert (config.correct_value, config.min_turns, config.pr_overshoot_zero) == (1.0, 1, True)
  assert (config.outcome_reward, config.step_cost_churn_only) == ("em", False)
  assert config.prefix_buffer_decision_bonus == 0.0


def test_config_from_ml_collections():
  cfg = ml_collections.ConfigDict({"lambda_deg": 0.5, "step_cost": 0.01, "pr_overshoot_zero": True, "min_turns": 1})
  config = RewardConfig.from_mapping(cfg)
  assert (config.lambda_deg, config.step_cost, config.pr_overshoot_zero) == (0.5, 0.01, True)
  with pytest.raises(ValueError, match="lambda_degg"):
    RewardConfig.from_mapping({"lambda_degg": 0.5})


@pytest.mark.parametrize(
  "kwargs, name",
  [
    ({"fmt": "reflection_tag"}, "fmt"),
    ({"outcome_reward": "foo"}, "outcome_reward"),
    ({"lambda_deg": -0.5}, "lambda_deg"),
    ({"lambda_deg": float("nan")}, "lambda_deg"),
    ({"lambda_deg": True}, "lambda_deg"),
    ({"reflect_weight": -0.1}, "reflect_weight"),
    ({"correct_value": -1.0}, "correct_value"),
    ({"outcome_weight": -0.9}, "outcome_weight"),
    ({"reflect_lower_clip": 0.2}, "reflect_lower_clip"),
    ({"em_reflect_bonus_weight": -0.1}, "em_reflect_bonus_weight"),
    ({"em_reflect_step_discount": 1.5}, "em_reflect_step_discount"),
    ({"step_cost": -0.01}, "step_cost"),
    ({"prefix_buffer_decision_bonus": -0.3}, "prefix_buffer_decision_bonus"),
    ({"min_turns": 0}, "min_turns"),
    ({"min_turns": 1.5}, "min_turns"),
    ({"pr_overshoot_zero": "yes"}, "pr_overshoot_zero"),
    ({"is_prefix_buffer_rollout": True}, "prefix_buffer_type"),
    ({"is_prefix_buffer_rollout": True, "prefix_buffer_type": "wrong"}, "prefix_buffer_num_turns"),
    ({"prefix_buffer_type": "maybe"}, "prefix_buffer_type"),
  ],
)
def test_bad_options_raise(kwargs, name):
  with pytest.raises(ValueError, match=name):
    score_turns(commit(OPT), OPEN, **kwargs)


def test_bad_inputs_raise():
  with pytest.raises(MapSpecError, match="target_pos"):
    score_turns(commit(OPT), {"layout": OPEN["layout"], "start_pos": 0})
  with pytest.raises(MapSpecError, match="square"):
    score_turns(commit(OPT), {"layout": ["SF", "FFG"], "start_pos": 0, "target_pos": 4})
  with pytest.raises(MapSpecError, match="not the S cell"):
    score_turns(commit(OPT), {**OPEN, "start_pos": 1})
  with pytest.raises(ValueError, match="sequence of turn strings"):
    score_turns(answer(OPT), OPEN)
  with pytest.raises(ValueError, match="turn 1 must be a str"):
    score_turns([answer(OPT), None], OPEN)


# --- batch entry point ------------------------------------------------------------------------


def test_score_batch_matches_score_turns():
  config = dataclasses.replace(RewardConfig.released(), prefix_buffer_decision_bonus=0.3)
  shared = dict(OPEN)  # one spec object shared by a group, as a rollout group would
  transcripts = [
    [answer(HALF), revise(OPT), final(OPT)],
    commit(HALF),
    ["garbage"],
    [answer(OPT), revise(OPT2), final(OPT2)],
    commit("right down right down"),
  ]
  specs = [shared, shared, shared, shared, HOLE]
  per_sample = [None, buffer("wrong"), None, buffer("right"), BufferFields()]
  columns = {
    "is_prefix_buffer_rollout": [False, True, False, True, False],
    "prefix_buffer_type": [None, "wrong", None, "right", None],
    "prefix_buffer_num_turns": [0, 1, 0, 1, 0],
  }
  for fields in (per_sample, columns):
    out = score_batch(transcripts, specs, config, buffer_fields=fields)
    assert set(out) == set(METRIC_KEYS)
    for key in METRIC_KEYS:
      assert out[key].shape == (5,) and out[key].dtype == np.float64
    for i in range(5):
      item = {name: column[i] for name, column in columns.items()}
      expected = score_turns(transcripts[i], specs[i], **dataclass_kwargs(config), **item)
      assert {key: out[key][i] for key in METRIC_KEYS} == expected
  # Spot values: wrong prefix revised to EM (+0.3 on top of the released EM reward), wrong prefix
  # re-committed (-0.3), right prefix revised (-0.3).
  assert out["overall"][1] == pytest.approx(0.1 - 0.3)
  assert out["overall"][3] == pytest.approx(1.0 - 0.01 * 1 - 0.3)


def test_score_batch_errors():
  with pytest.raises(ValueError, match="2 transcripts but 1 specs"):
    score_batch([commit(OPT), commit(OPT)], [OPEN], RewardConfig())
  with pytest.raises(ValueError, match="RewardConfig"):
    score_batch([commit(OPT)], [OPEN], {"lambda_deg": 1.0})
  with pytest.raises(ValueError, match="expected 1"):
    score_batch([commit(OPT)], [OPEN], RewardConfig(), buffer_fields=[None, None])
  with pytest.raises(ValueError, match="unknown key"):
    score_batch([commit(OPT)], [OPEN], RewardConfig(), buffer_fields={"prefix_type": ["wrong"]})


def test_distance_cache_is_shared_and_read_only():
  spec = parse_spec(OPEN)
  first = fl.goal_distances(spec)
  assert fl.goal_distances(parse_spec(dict(OPEN))) is first
  assert not first.flags.writeable
  np.testing.assert_array_equal(first, distance_map(spec))


# --- cross-checks against upstream's shared data ----------------------------------------------


@pytest.fixture(scope="module")
def eval_maps():
  return release_data.read_maps(release_data.EVAL_FILE)


def test_eval_maps_optimal_route_is_em_and_perturbations_are_not(eval_maps):
  assert len(eval_maps) == 1000
  released = dataclass_kwargs(RewardConfig.released())
  moves = ["up", "down", "left", "right"]
  for entry in eval_maps:
    opt = entry["metadata"]["actions"]
    n = len(opt)
    # The shipped optimal route, in the comma form the data spells it ("left, up").
    out = score_turns(commit(entry["textual_trajectory"]), entry)
    assert (out["em"], out["em_turn1"], out["format"], out["pr_final"]) == (1.0, 1.0, 0.1, 1.0), entry["id"]
    assert out["overall"] == 1.0  # correct_value
    assert score_turns(commit(" ".join(opt)), entry, **released)["overall"] == 1.0
    # One move too many: not EM; an overshoot under the released recipe.
    longer = " ".join(opt + ["up"])
    out = score_turns(commit(longer), entry)
    assert (out["em"], out["pr_final"], out["overall"]) == (0.0, 1.0, pytest.approx(0.1 + 0.9 * 0.0))
    assert score_turns(commit(longer), entry, **released)["pr_final"] == 0.0
    # The last move changed: not EM, and only the first n-1 moves make progress.
    for other in moves:
      if other != opt[-1]:
        out = score_turns(commit(" ".join(opt[:-1] + [other])), entry)
        assert (out["em"], out["pr_final"]) == (0.0, (n - 1) / n), entry["id"]
    if n >= 2:
      # One move short, then revised to the optimal route (released recipe).
      turns = [answer(" ".join(opt[:-1])), revise(" ".join(opt)), final(" ".join(opt))]
      out = score_turns(turns, entry, **released)
      assert out["pr_turn1"] == (n - 1) / n
      assert out["overall"] == pytest.approx(1.0 + 0.1 * (1.0 - (n - 1) / n) * 1.0**1 - 0.01 * 1)


def test_progress_rate_against_upstream_distance_maps():
  """PR of random routes, recomputed from the BFS distances upstream ships with its training maps."""
  steps = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
  rng = random.Random(0)
  entries = release_data.read_maps(release_data.TRAIN_FILE)
  assert len(entries) == 3000
  short = {"U": "up", "D": "down", "L": "left", "R": "right"}
  for entry in entries:
    level, start = entry["level"], entry["start_pos"]
    dist = {int(cell): d for cell, d in entry["distance_map"].items()}  # holes are absent
    n_opt = entry["optimal_path_len"]
    opt = [short[a] for a in entry["optimal_actions"]]
    routes = [opt, opt[: rng.randint(1, n_opt)] + [rng.choice(list(steps))]]
    routes += [[rng.choice(list(steps)) for _ in range(rng.randint(1, 2 * n_opt))] for _ in range(2)]
    for route in routes:
      row, col, cur, matched = *divmod(start, level), dist[start], 0
      for move in route:
        row, col = row + steps[move][0], col + steps[move][1]
        cell = row * level + col
        if not (0 <= row < level and 0 <= col < level) or dist.get(cell, cur) >= cur:
          break
        cur, matched = dist[cell], matched + 1
      out = score_turns(commit(" ".join(route)), entry)
      assert out["pr_turn1"] == matched / n_opt, (entry["map_id"], route)
