"""Grounding eval records and summaries, the replay-buffer helpers (prefix type, random init) and the gallery."""

import math

import numpy as np
import pytest

from vrrl_jax.tasks.grounding import evaluate, gallery, parse, prefixes, protocol, scenes

SPEC = dict(kind="table", style="plain", seed=4, width=252, height=252, question=5)
OOD_SPEC = dict(kind="bars", style="dark", seed=4, width=252, height=252, question=0)
Q = scenes.scene_question(SPEC)
TX, TY = Q.point
D = 252 * math.sqrt(2)


def tool(x, y):
  call = f'{{"name": "pointing", "arguments": {{"coordinate": [{x}, {y}]}}}}'
  return f"<think>look</think>\n<tool_call>\n{call}\n</tool_call>"


def answer(x, y):
  return f"<think>done</think>\n<answer>({x}, {y})</answer>"


def test_episode_records():
  good = evaluate.episode_record(SPEC, [tool(TX + 60, TY + 80), tool(TX + 30, TY + 40), answer(TX, TY)], "final")
  assert good.correct and not good.correct_turn1 and good.format_ok and not good.ood
  assert good.crops == 2 and good.n_turns == 3 and good.n_points == 2
  assert good.dist_turn1 == pytest.approx(100 / D) and good.dist_final == 0.0
  # Off-image and unparseable looks get text, not crops.
  mixed = [tool(300, 5), "<think>a</think><tool_call>?</tool_call>", tool(TX, TY), answer(TX, TY)]
  rec = evaluate.episode_record(SPEC, mixed, "final")
  assert rec.crops == 1 and rec.correct and not rec.format_ok
  # The budget's last look is not shown.
  rec = evaluate.episode_record(SPEC, [tool(1, 1), tool(2, 2)], "max_turns", max_turns=2)
  assert rec.crops == 1 and not rec.correct and rec.dist_final == pytest.approx(math.dist((2, 2), Q.point) / D)
  with pytest.raises(ValueError, match="finish_reason"):
    evaluate.episode_record(SPEC, [], "timeout")


def test_summaries_by_distribution():
  records = [
    evaluate.episode_record(SPEC, [tool(TX, TY), answer(TX, TY)], "final"),
    evaluate.episode_record(SPEC, [tool(TX + 60, TY + 80), answer(TX + 30, TY + 40)], "final"),
    evaluate.episode_record(SPEC, ["no think"], "no_think"),
    evaluate.episode_record(OOD_SPEC, [tool(1, 1), tool(2, 2)], "length"),
  ]
  s = evaluate.summarize(records)
  assert s["n"] == 4 and s["accuracy"] == 0.25 and s["accuracy_turn1"] == 0.25
  assert s["turn1_to_final_delta"] == 0.0
  assert s["crops_per_episode"] == pytest.approx((1 + 1 + 0 + 2) / 4)
  assert s["format_error_rate"] == 0.5
  assert s["finish_final_rate"] == 0.5 and s["finish_no_think_rate"] == 0.25 and s["finish_length_rate"] == 0.25
  assert s["mean_dist_final"] == pytest.approx((0 + 50 / D + 1 + records[3].dist_final) / 4)
  agg = evaluate.aggregate(records)
  assert agg["in_distribution"]["n"] == 3 and agg["out_of_distribution"]["n"] == 1
  assert agg["in_distribution"]["accuracy"] == pytest.approx(1 / 3)
  assert set(agg["by_kind"]) == {"table", "bars"}
  with pytest.raises(ValueError):
    evaluate.summarize([])


def test_prefix_type():
  assert prefixes.prefix_type(SPEC, [tool(TX + 60, TY + 80), answer(TX, TY)]) == "right"
  assert prefixes.prefix_type(SPEC, [tool(TX, TY), answer(TX + 60, TY + 80)]) == "wrong"
  assert prefixes.prefix_type(SPEC, [tool(TX + 60, TY + 80), tool(TX, TY)]) == "right"  # last look, no answer
  assert prefixes.prefix_type(SPEC, [tool(TX, TY), tool(TX + 60, TY + 80)]) == "wrong"
  assert prefixes.prefix_type(SPEC, []) == "wrong"
  assert prefixes.prefix_type(SPEC, ["<answer>(1"]) == "wrong"


def test_random_init_turn():
  assert prefixes.init_distance_range(252, 252) == (38, 68)  # 100 and 180 times 252 / 672
  assert prefixes.init_distance_range(896, 672) == (100, 180)
  assert prefixes.init_distance_range(1008, 756) == (100, 180)
  rng = np.random.default_rng(0)
  for _ in range(30):
    text = prefixes.random_init_turn(SPEC, rng)
    turn = parse.parse_turn(text)
    assert turn.is_point and turn.well_formed and turn.has_think
    x, y = turn.point
    assert 0 <= x < 252 and 0 <= y < 252
    assert 38 <= math.dist((x, y), Q.point) <= 68
    assert not (Q.box[0] <= x <= Q.box[2] and Q.box[1] <= y <= Q.box[3])
  a = prefixes.random_init_turn(SPEC, np.random.default_rng(5), 10, 20, point_format="points")
  assert a == prefixes.random_init_turn(SPEC, np.random.default_rng(5), 10, 20, point_format="points")
  assert '<points x1="' in a
  ep = protocol.Episode(SPEC)
  step = ep.step(prefixes.random_init_turn(SPEC, rng))
  assert not step.done and step.feedback_image is not None
  with pytest.raises(ValueError):
    prefixes.random_init_turn(SPEC, rng, 1000, 1200)
  with pytest.raises(ValueError):
    prefixes.random_init_turn(SPEC, rng, 50, 10)


def test_gallery_is_small_and_complete(tmp_path):
  path = gallery.write_gallery(tmp_path)
  html = path.read_text()
  pngs = sorted(tmp_path.glob("*.png"))
  assert len(pngs) >= 3 * 6 + 3
  for png in pngs:
    assert png.name in html
  assert "Point to" in html and "&lt;tool_call&gt;" in html
  assert sum(p.stat().st_size for p in tmp_path.iterdir()) < 1.5 * 2**20
