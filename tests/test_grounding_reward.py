"""The grounding reward: hand-computed episodes, the format gate, options, batching, and a property test.

The scene is a 252 x 252 table (diagonal D = 252 * sqrt(2) = 356.3818...); points are placed at 3-4-5 offsets from
the target point t so that distances are whole numbers: |(30, 40)| = 50, |(60, 80)| = 100, |(0, 20)| = 20.
"""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vrrl_jax.tasks.grounding import reward, scenes
from vrrl_jax.tasks.grounding.reward import RewardConfig, score_batch, score_turns

SPEC = dict(kind="table", style="plain", seed=4, width=252, height=252, question=5)
Q = scenes.scene_question(SPEC)
TX, TY = Q.point
D = 252 * math.sqrt(2)


def tool(x, y, think="look"):
  call = f'{{"name": "pointing", "arguments": {{"coordinate": [{x}, {y}]}}}}'
  return f"<think>{think}</think>\n<tool_call>\n{call}\n</tool_call>"


def points(x, y):
  return f'<think>look</think><points x1="{x}" y1="{y}">cell</points>'


def answer(x, y):
  return f"<think>done</think>\n<answer>({x}, {y})</answer>"


def at(dx, dy):
  return TX + dx, TY + dy


def inside_box(p):
  x1, y1, x2, y2 = Q.box
  return x1 <= p[0] <= x2 and y1 <= p[1] <= y2


def test_preconditions_of_the_hand_computed_cases():
  for offset in ((60, 80), (30, 40), (-30, -40), (0, 20), (0, 21), (-60, 80)):
    x, y = at(*offset)
    assert 0 <= x < 252 and 0 <= y < 252
    assert not inside_box((x, y)), offset
  assert inside_box(Q.point)
  assert reward.METRIC_KEYS[0] == "overall"


def test_correct_after_two_looks():
  m = score_turns([tool(*at(60, 80)), tool(*at(30, 40)), answer(TX, TY)], SPEC)
  assert m["overall"] == pytest.approx(0.99)  # 1.0 - 0.01 * (2 points - min_points 1)
  assert m["correct"] == 1.0 and m["format"] == 0.1 and m["step_cost"] == pytest.approx(0.01)
  assert m["reflection"] == pytest.approx(0.2805981)  # (100 - 50) / D + (50 - 0) / D = 100 / D
  assert m["dist_turn1"] == pytest.approx(0.2805981) and m["dist_final"] == 0.0
  assert m["correct_turn1"] == 0.0 and m["n_turns"] == 3.0 and m["n_points"] == 2.0 and m["break"] == 0.0


def test_correct_at_once():
  m = score_turns([tool(TX, TY), answer(TX, TY)], SPEC)
  assert m["overall"] == 1.0 and m["reflection"] == 0.0 and m["correct_turn1"] == 1.0 and m["step_cost"] == 0.0


def test_step_cost_per_extra_look():
  turns = [tool(*at(60, 80)), tool(*at(30, 40)), tool(*at(-30, -40)), tool(TX, TY), answer(TX, TY)]
  assert score_turns(turns, SPEC)["overall"] == pytest.approx(0.97)  # 1.0 - 0.01 * 3
  cfg = RewardConfig(step_cost=0.05, correct_value=2.0)
  assert score_turns(turns, SPEC, cfg)["overall"] == pytest.approx(1.85)  # 2.0 - 0.05 * 3


def test_wrong_answer_scores_progress():
  m = score_turns([tool(*at(60, 80)), answer(*at(30, 40))], SPEC)
  assert m["correct"] == 0.0 and m["format"] == 0.1
  assert m["reflection"] == pytest.approx(0.1402990)  # (100 - 50) / D
  assert m["overall"] == pytest.approx(0.2262691)  # 0.1 + 0.9 * 50 / D
  assert m["dist_final"] == pytest.approx(0.1402990)


def test_degradations_weighted_by_lambda_deg():
  turns = [tool(*at(30, 40)), tool(*at(60, 80)), answer(*at(-30, -40))]  # distances 50, 100, 50
  m = score_turns(turns, SPEC)  # lambda_deg 1: -50 + 50 = 0
  assert m["reflection"] == 0.0 and m["overall"] == pytest.approx(0.1) and m["break"] == 0.0
  m = score_turns(turns, SPEC, RewardConfig(lambda_deg=0.5))  # 0.5 * -50 + 50 = 25
  assert m["reflection"] == pytest.approx(0.0701495)  # 25 / D
  assert m["overall"] == pytest.approx(0.1631346)  # 0.1 + 0.9 * 25 / D


def test_moving_away_is_clipped_and_counted_as_a_break():
  m = score_turns([tool(*at(30, 40)), answer(*at(60, 80))], SPEC)
  assert m["reflection"] == 0.0 and m["overall"] == pytest.approx(0.1) and m["break"] == 1.0
  m = score_turns([tool(*at(30, 40)), answer(*at(60, 80))], SPEC, RewardConfig(reflect_lower_clip=-1.0))
  assert m["reflection"] == pytest.approx(-0.1402990)
  assert m["overall"] == pytest.approx(0.1 - 0.9 * 50 / D)


@pytest.mark.parametrize(
  "turns",
  [
    [answer(TX, TY)],  # correct, but no look first (min_points = 1)
    [tool(*at(60, 80)), tool(TX, TY)],  # no answer
    [tool(*at(60, 80)).replace("<think>look</think>", ""), answer(TX, TY)],  # a turn without think
    [tool(*at(60, 80)) + " extra", answer(TX, TY)],  # text after the call
    [tool(300, 20), answer(TX, TY)],  # an off-image look
    [tool(*at(60, 80)), tool(*at(60, 80)), answer(TX, TY)],  # a repeated look
    [tool(*at(60, 80)), "<think>done</think><answer>Q3</answer>"],  # an answer that is not a point
    [tool(*at(60, 80)), answer(TX, TY), tool(1, 1)],  # a turn after the answer
    [tool(*at(60, 80)), answer(TX, TY) + answer(TX, TY)[len("<think>done</think>") :]],  # two answers
    [points(*at(60, 80)), answer(TX, TY)],  # the other point format
    [],
  ],
)
def test_format_gate_fails(turns):
  m = score_turns(turns, SPEC)
  assert m["format"] == 0.0 and m["overall"] == 0.0


def test_format_gate_options():
  assert score_turns([answer(TX, TY)], SPEC, RewardConfig(min_points=0))["overall"] == 1.0
  cfg = RewardConfig(point_format="points")
  assert score_turns([points(*at(60, 80)), answer(TX, TY)], SPEC, cfg)["overall"] == 1.0  # one look: no step cost
  # The answer may lie outside the image: it is wrong, not malformed.
  m = score_turns([tool(*at(60, 80)), answer(-5, 400)], SPEC)
  assert m["format"] == 0.1 and m["correct"] == 0.0


def test_correct_rules():
  near = at(0, 20)  # 20 px below t, just outside the box
  far = at(0, 21)
  for rule, want_near, want_far in (("box", 0.0, 0.0), ("point", 1.0, 0.0), ("box_or_point", 1.0, 0.0)):
    cfg = RewardConfig(correct_rule=rule)
    assert score_turns([tool(*at(60, 80)), answer(*near)], SPEC, cfg)["correct"] == want_near
    assert score_turns([tool(*at(60, 80)), answer(*far)], SPEC, cfg)["correct"] == want_far
  corner = Q.box[2], Q.box[3]  # inside the box (inclusive) but farther than 20 px from t
  assert math.dist(corner, Q.point) > 20
  assert score_turns([tool(1, 1), answer(*corner)], SPEC)["correct"] == 1.0
  assert score_turns([tool(1, 1), answer(*corner)], SPEC, RewardConfig(correct_rule="point"))["correct"] == 0.0
  assert (
    score_turns([tool(1, 1), answer(*corner)], SPEC, RewardConfig(correct_rule="point", tolerance_px=40))["correct"]
    == 1.0
  )


def test_prefix_buffer_decision_bonus():
  cfg = RewardConfig(prefix_buffer_decision_bonus=0.2)
  wrong = dict(is_prefix_buffer_rollout=True, prefix_buffer_type="wrong", prefix_buffer_num_turns=1)
  right = dict(is_prefix_buffer_rollout=True, prefix_buffer_type="right", prefix_buffer_num_turns=1)
  repoint = [tool(*at(60, 80)), tool(TX, TY), answer(TX, TY)]
  commit = [tool(*at(60, 80)), answer(TX, TY)]
  assert score_turns(repoint, SPEC, cfg, wrong)["overall"] == pytest.approx(0.99 + 0.2)
  assert score_turns(commit, SPEC, cfg, wrong)["overall"] == pytest.approx(1.0 - 0.2)
  assert score_turns(commit, SPEC, cfg, right)["overall"] == pytest.approx(1.0 + 0.2)
  assert score_turns(repoint, SPEC, cfg, right)["overall"] == pytest.approx(0.99 - 0.2)
  assert score_turns(repoint, SPEC, cfg)["decision_bonus"] == 0.0  # not a buffer rollout
  assert score_turns(repoint, SPEC, RewardConfig(), wrong)["decision_bonus"] == 0.0  # bonus off


def test_score_batch_matches_score_turns():
  batch = [
    [tool(*at(60, 80)), tool(*at(30, 40)), answer(TX, TY)],
    [tool(*at(60, 80)), answer(*at(30, 40))],
    ["garbage"],
  ]
  other = dict(SPEC, question=0)
  specs = [SPEC, scenes.parse_spec(SPEC), other]
  out = score_batch(batch, specs, RewardConfig())
  assert list(out) == list(reward.METRIC_KEYS)
  for key, column in out.items():
    assert column.dtype == np.float64 and column.shape == (3,)
    for i in range(3):
      assert column[i] == score_turns(batch[i], specs[i])[key]
  np.testing.assert_allclose(out["overall"][:2], [0.99, 0.1 + 0.9 * 50 / D])
  columnar = {"is_prefix_buffer_rollout": [True, False, False], "prefix_buffer_type": ["wrong", None, None]}
  columnar["prefix_buffer_num_turns"] = [1, 0, 0]
  cfg = RewardConfig(prefix_buffer_decision_bonus=0.5)
  assert score_batch(batch, specs, cfg, columnar)["decision_bonus"].tolist() == [0.5, 0.0, 0.0]
  per_sample = [dict(zip(columnar, v)) for v in zip(*columnar.values())]
  assert score_batch(batch, specs, cfg, per_sample)["decision_bonus"].tolist() == [0.5, 0.0, 0.0]


def test_caller_mistakes_raise():
  with pytest.raises(ValueError, match="unknown reward option"):
    RewardConfig.from_mapping({"step_cost": 0.1, "stepcost": 0.1})
  assert RewardConfig.from_mapping({"step_cost": 0.05}).step_cost == 0.05
  for bad in (
    {"step_cost": -0.1},
    {"lambda_deg": -1},
    {"reflect_lower_clip": 0.5},
    {"correct_rule": "near"},
    {"tolerance_px": float("nan")},
    {"min_points": -1},
    {"min_points": 1.5},
    {"point_format": "json"},
    {"correct_value": "1"},
  ):
    with pytest.raises(ValueError):
      RewardConfig(**bad)
  with pytest.raises(ValueError, match="sequence of turn strings"):
    score_turns("<think>a</think>", SPEC)
  with pytest.raises(ValueError, match="must be a str"):
    score_turns([b"bytes"], SPEC)
  with pytest.raises(ValueError):
    score_turns([], {**SPEC, "kind": "pie"})
  with pytest.raises(ValueError, match="specs"):
    score_batch([[]], [], RewardConfig())
  with pytest.raises(ValueError, match="RewardConfig"):
    score_batch([[]], [SPEC], {"step_cost": 0.1})
  with pytest.raises(ValueError, match="prefix-buffer rollout needs"):
    score_turns([], SPEC, None, {"is_prefix_buffer_rollout": True})
  with pytest.raises(ValueError, match="unknown key"):
    score_batch([[]], [SPEC], RewardConfig(), {"prefix_type": ["wrong"]})


FRAGMENTS = [
  "<think>",
  "</think>",
  "<answer>",
  "</answer>",
  "<tool_call>",
  "</tool_call>",
  '{"name": "pointing", "arguments": {"coordinate": [',
  "]}}",
  '<points x1="',
  '" y1="',
  '">',
  "</points>",
  "(",
  ")",
  ", ",
  "-",
  "1e9",
  "999999",
  "125",
  "106",
  "0",
  "\n",
  "null",
  "[[[[",
]
turn_text = st.one_of(
  st.text(max_size=60),
  st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.integers(-400, 400).map(str)), max_size=14).map("".join),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
  turns=st.lists(turn_text, max_size=5),
  point_format=st.sampled_from(["tool_call", "points"]),
  rule=st.sampled_from(reward.CORRECT_RULES),
  buffer_turns=st.integers(0, 3),
)
def test_any_text_scores_finite(turns, point_format, rule, buffer_turns):
  cfg = RewardConfig(point_format=point_format, correct_rule=rule, prefix_buffer_decision_bonus=0.3)
  buffer = {"is_prefix_buffer_rollout": buffer_turns > 0, "prefix_buffer_num_turns": buffer_turns}
  buffer["prefix_buffer_type"] = "wrong" if buffer_turns else None
  m = score_turns(turns, SPEC, cfg, buffer)
  assert set(m) == set(reward.METRIC_KEYS)
  assert all(math.isfinite(v) for v in m.values())
  assert -0.3 <= m["overall"] <= 1.3
  assert 0.0 <= m["dist_turn1"] <= 1.0 and 0.0 <= m["dist_final"] <= 1.0
  assert m["format"] in (0.0, 0.1) and m["correct"] in (0.0, 1.0)
