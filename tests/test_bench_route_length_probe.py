"""The route-length probe on a hand-drawn map, against counts worked out by hand."""

import pytest

from vrrl_jax.tasks.frozenlake import maps

# S F F
# F H F      shortest route: 4 moves (right right down down, or down down right right)
# F F G
SPEC = maps.parse_spec({"layout": ["SFF", "FHF", "FFG"], "start_pos": 0, "target_pos": 8})


@pytest.fixture(scope="module")
def probe(bench_script):
  return bench_script("route_length_probe")


def test_lengths_and_overshoot_counted_by_hand(probe):
  exact = ["right", "right", "down", "down"]
  past = ["right", "right", "down", "down", "left"]  # on the gift after move 4, then one more
  short = ["down", "down", "right"]
  off_first = ["up", "right", "right", "down", "down", "down"]  # off grid at once: not a pass over the gift
  records = [
    {"level": 3, "map_id": "m", "first": past, "committed": exact},
    {"level": 3, "map_id": "m", "first": short, "committed": past},
    {"level": 3, "map_id": "m", "first": off_first, "committed": None},
    {"level": 3, "map_id": "m", "first": None, "committed": exact},
    {"level": 4, "map_id": "m", "first": exact, "committed": exact},  # not a map of the set: skipped
  ]
  out = probe.length_profile(records, {(3, "m"): SPEC})
  assert out["n"] == 4
  assert out["first"] == {
    "routes": 3,
    "length_minus_shortest": {"-1": 1, "1": 1, "2": 1},
    "too_long": round(2 / 3, 4),
    "too_short": round(1 / 3, 4),
    "overshoot": round(1 / 3, 4),
  }
  assert out["final"] == {
    "routes": 3,
    "length_minus_shortest": {"0": 2, "1": 1},
    "too_long": round(1 / 3, 4),
    "too_short": 0.0,
    "overshoot": round(1 / 3, 4),
  }


def test_a_route_through_a_hole_does_not_pass_over_the_gift(probe):
  # down right: into the hole at (1, 1); the walk goes on, but the episode ended in the hole.
  assert not probe.passes_over_goal(SPEC, ["down", "right", "right", "down", "left"])
  assert probe.passes_over_goal(SPEC, ["down", "down", "right", "right", "up"])
  assert not probe.passes_over_goal(SPEC, ["down", "down", "right", "right"])  # ends on the gift: not past it
