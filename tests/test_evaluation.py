"""Eval metrics: per-route outcomes on hand-made maps, committed-route rules, and aggregation arithmetic."""

import pytest

from vrrl_jax.tasks.frozenlake import evaluation as ev
from vrrl_jax.tasks.frozenlake import maps

# S . .
# H H .
# G . .      shortest: right right down down left left (6)
SPEC = maps.parse_spec({"layout": ["SFF", "HHF", "GFF"], "start_pos": 0, "target_pos": 6})
OPT = ["right", "right", "down", "down", "left", "left"]


@pytest.mark.parametrize(
  "route, want",
  [
    (OPT, (True, True, True)),
    (OPT + ["up"], (True, True, False)),  # gym stops at the gift; too long for EM
    (["down"], (False, False, False)),  # straight into a hole
    (["up"] + OPT, (False, True, False)),  # off-grid no-op first: reaches gift, not strict
    (["right", "right", "down", "down", "left"], (False, False, False)),  # stops short
    ([], (False, False, False)),
    (None, (False, False, False)),
  ],
)
def test_route_outcome(route, want):
  assert ev.route_outcome(SPEC, route, 6) == want


def test_committed_route_is_final_else_last_route():
  turns = [
    "<ANSWER>down</ANSWER>",
    "<THINK>hole</THINK><ANSWER>" + " ".join(OPT) + "</ANSWER>",
    "<FINAL>" + " ".join(OPT) + "</FINAL>",
  ]
  rec = ev.episode_record("m", SPEC, turns, "final")
  assert rec.committed == tuple(OPT) and rec.optimal and not rec.turn1_strict and rec.n_routes == 2
  rec = ev.episode_record("m", SPEC, turns[:2], "max_turns")
  assert rec.committed == tuple(OPT) and rec.optimal
  rec = ev.episode_record("m", SPEC, ["no tags"], "format_error")
  assert rec.committed is None and not rec.strict
  with pytest.raises(ValueError, match="finish_reason"):
    ev.episode_record("m", SPEC, turns, "crashed")


def test_aggregate_rates_and_split_means():
  good = ["<ANSWER>" + " ".join(OPT) + "</ANSWER>", "<FINAL>" + " ".join(OPT) + "</FINAL>"]
  bad = ["<ANSWER>down</ANSWER>", "garbage"]
  spec7 = maps.parse_spec(
    {"layout": ["S" + "F" * 6] + ["F" * 7] * 5 + ["F" * 6 + "G"], "start_pos": 0, "target_pos": 48}
  )
  recs = [
    ev.episode_record("a", SPEC, good, "final"),
    ev.episode_record("b", SPEC, bad, "format_error"),
    ev.episode_record("c", spec7, ["<ANSWER>down</ANSWER>"] * 3, "max_turns"),
  ]
  out = ev.aggregate(recs)
  l3 = out["by_level"]["L3"]
  assert l3["n"] == 2 and l3["optimal_rate"] == 0.5 and l3["format_error_rate"] == 0.5
  assert l3["avg_turns"] == 2.0 and l3["turn1_strict_rate"] == 0.5
  assert out["by_level"]["L7"]["max_turns_rate"] == 1.0 and out["by_level"]["L7"]["optimal_rate"] == 0.0
  assert out["in_distribution"] == {"levels": ["L3"], "optimal_rate": 0.5, "strict_success_rate": 0.5}
  assert out["out_of_distribution"]["optimal_rate"] == 0.0
  assert out["overall"]["n"] == 3 and out["overall"]["optimal_rate"] == pytest.approx(1 / 3)
  with pytest.raises(ValueError, match="no episodes"):
    ev.summarize([])
