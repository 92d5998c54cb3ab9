"""BFS, layout hash and validation of maps.py against upstream's published maps (the reference)."""

import hashlib

import pytest

from vrrl_jax.tasks.frozenlake import release_data
from vrrl_jax.tasks.frozenlake import maps


@pytest.fixture(scope="module")
def eval_maps():
  return release_data.read_maps(release_data.EVAL_FILE)


@pytest.fixture(scope="module")
def rl_maps():
  return release_data.read_maps(release_data.TRAIN_FILE)


def test_eval_maps_shortest_length_and_routes(eval_maps):
  assert len(eval_maps) == 1000
  length_agree = route_exact = 0
  for entry in eval_maps:
    md = entry["metadata"]
    spec = maps.parse_spec(entry)
    assert spec.level == md["level"]
    length_agree += maps.shortest_path_len(spec) == md["n_steps"]
    route_exact += maps.is_exact_match(spec, md["actions"])
    # the published route's visited cells are exactly what walking it gives
    assert [r * spec.level + c for r, c in maps.walk(spec, md["actions"]).positions] == md["positions"][1:]
  assert (length_agree, route_exact) == (1000, 1000)


def test_rl_maps_lengths_distances_hashes_routes(rl_maps):
  assert len(rl_maps) == 3000
  counts = dict(length=0, distances=0, hash=0, route=0, own_route=0)
  for entry in rl_maps:
    spec = maps.parse_spec(entry, require_reachable=True)
    n_opt = maps.shortest_path_len(spec)
    counts["length"] += n_opt == entry["optimal_path_len"]
    dist = maps.distance_map(spec).reshape(-1)
    counts["distances"] += {str(i): int(d) for i, d in enumerate(dist) if d >= 0} == entry["distance_map"]
    counts["hash"] += spec.layout_hash == entry["layout_hash"]
    actions = [maps.SHORT_TO_MOVE[a] for a in entry["optimal_actions"]]
    counts["route"] += maps.is_exact_match(spec, actions)
    counts["own_route"] += maps.is_exact_match(spec, maps.shortest_path(spec))
    assert int(spec.holes().sum()) == entry["hole_count"]
  assert counts == dict(length=3000, distances=3000, hash=3000, route=3000, own_route=3000)


def test_layout_hash_is_sha256_of_joined_rows():
  layout = [["S", "F"], ["H", "G"]]
  assert maps.layout_hash(layout) == hashlib.sha256(b"SFHG").hexdigest()
  assert maps.layout_hash(["SF", "HG"]) == maps.layout_hash(layout)


def test_exact_match_rejects_wrong_routes():
  spec = maps.parse_spec({"layout": ["SFF", "FHF", "FFG"], "start_pos": 0, "target_pos": 8})
  assert maps.shortest_path_len(spec) == 4
  assert maps.is_exact_match(spec, ["right", "right", "down", "down"])
  assert not maps.is_exact_match(spec, ["down", "right", "right", "down"])  # steps into the hole at (1, 1)
  assert not maps.is_exact_match(spec, ["up", "right", "right", "down", "down"])  # off-grid first move
  assert not maps.is_exact_match(spec, ["right", "right", "down"])  # stops short
  assert not maps.is_exact_match(spec, [])


@pytest.mark.parametrize(
  "spec, message",
  [
    ({"layout": ["SFF", "FG"], "start_pos": 0, "target_pos": 4}, "square"),
    ({"layout": ["SFF", "FXF", "FFG"], "start_pos": 0, "target_pos": 8}, "unknown cell types"),
    ({"layout": ["SFS", "FFF", "FFG"], "start_pos": 0, "target_pos": 8}, "exactly one S and one G"),
    ({"layout": ["SFF", "FFF", "FFF"], "start_pos": 0, "target_pos": 8}, "exactly one S and one G"),
    ({"layout": ["SFF", "FFF", "FFG"], "start_pos": 9, "target_pos": 8}, "outside the 3x3 grid"),
    ({"layout": ["SFF", "FFF", "FFG"], "start_pos": 0, "target_pos": -1}, "outside the 3x3 grid"),
    ({"layout": ["SFF", "FFF", "FFG"], "start_pos": 1, "target_pos": 8}, "not the S cell"),
    ({"layout": ["SFF", "FFF", "FFG"], "start_pos": 0, "target_pos": 7}, "not the G cell"),
    ({"layout": ["SFF", "FFF", "FFG"], "start_pos": 0}, "missing 'target_pos'"),
    ({"layout": "SFFFFFFFG", "start_pos": 0, "target_pos": 8}, "non-empty list of rows"),
    ({"layout": ["SFF", "FFF", "FFG"], "start_pos": 0, "target_pos": 8, "level": 4}, "does not match"),
    ({"layout": ["SFF", "FFF", "FFG"], "start_pos": "a", "target_pos": 8}, "must be integers"),
  ],
)
def test_malformed_specs_raise(spec, message):
  with pytest.raises(maps.MapSpecError, match=message):
    maps.parse_spec(spec)


def test_unreachable_goal_raises_only_when_required():
  spec = {"layout": ["SHF", "HFF", "FFG"], "start_pos": 0, "target_pos": 8}
  parsed = maps.parse_spec(spec)  # scoring accepts it (reward 0)
  assert maps.shortest_path_len(parsed) is None and maps.shortest_path(parsed) is None
  with pytest.raises(maps.MapSpecError, match="unreachable"):
    maps.parse_spec(spec, require_reachable=True)
