"""The hole-verdict probe's split of routes by where they meet a hole, on a hand-drawn map."""

import pytest

from vrrl_jax.tasks.frozenlake import maps

# S F F
# F H F
# F F G
SPEC = maps.parse_spec({"layout": ["SFF", "FHF", "FFG"], "start_pos": 0, "target_pos": 8})


@pytest.fixture(scope="module")
def probe(bench_script):
  return bench_script("hole_verdict_probe")


def test_routes_split_by_where_they_meet_a_hole(probe):
  assert probe.hole_split(SPEC, ["right", "right", "down", "down"]) == probe.NONE
  assert probe.hole_split(SPEC, ["down", "right"]) == probe.AT_END  # ends in the hole, under the star
  assert probe.hole_split(SPEC, ["down", "right", "right", "down"]) == probe.BEFORE_END  # walks on through it
  assert probe.hole_split(SPEC, ["up", "down", "right"]) == probe.AT_END  # off the grid first: not a hole
