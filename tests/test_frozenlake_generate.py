"""Generator: determinism, solvability, density vs upstream's training maps, eval exclusion, CLI."""

import collections
import hashlib
import json

import numpy as np
import pytest

from vrrl_jax.tasks.frozenlake import release_data
from vrrl_jax.tasks.frozenlake import generate, maps
from vrrl_jax.tasks.frozenlake.__main__ import main


@pytest.fixture(scope="module")
def rl_maps():
  return release_data.read_maps(release_data.TRAIN_FILE)


@pytest.fixture(scope="module")
def eval_hashes_reference():
  """Recomputed here with hashlib from the raw layouts, independently of the code under test."""
  entries = release_data.read_maps(release_data.EVAL_FILE)
  return {hashlib.sha256("".join("".join(r) for r in e["metadata"]["layout"]).encode()).hexdigest() for e in entries}


def _density(spec):
  return sum(row.count("H") for row in spec.layout) / spec.level**2


def test_deterministic_given_seed():
  a = generate.generate_maps(5, 40, seed=3)
  b = generate.generate_maps(5, 40, seed=3)
  c = generate.generate_maps(5, 40, seed=4)
  assert a == b
  assert a != c
  rng1, rng2 = np.random.default_rng(7), np.random.default_rng(7)
  assert [generate.generate_map(rng1, 6) for _ in range(5)] == [generate.generate_map(rng2, 6) for _ in range(5)]


@pytest.mark.parametrize("level", range(3, 13))
def test_every_level_solvable_with_min_length(level):
  for min_len in sorted({1, 2, level, 2 * (level - 1)}):
    specs = generate.generate_maps(level, 6 if level < 9 else 3, seed=level, min_path_len=min_len)
    for spec in specs:
      assert spec.level == level
      n_opt = maps.shortest_path_len(spec)
      assert n_opt is not None and n_opt >= min_len
      assert maps.is_exact_match(spec, maps.shortest_path(spec))
      assert 1 <= sum(row.count("H") for row in spec.layout) <= level * level - min_len - 1


@pytest.mark.parametrize("level", [4, 5])
def test_hole_density_matches_upstream_training_maps(rl_maps, level):
  upstream = np.array([x["hole_count"] / level**2 for x in rl_maps if x["level"] == level])
  generated = np.array([_density(s) for s in generate.generate_maps(level, 2000, seed=11, unique=False)])
  assert abs(generated.mean() - upstream.mean()) < 0.03, (generated.mean(), upstream.mean())
  assert abs(generated.std() - upstream.std()) < 0.03, (generated.std(), upstream.std())
  assert abs(np.percentile(generated, 95) - np.percentile(upstream, 95)) < 0.08
  assert generated.min() > 0  # like upstream, every map has a hole
  assert generated.max() >= 0.45  # the dense tail exists (upstream reaches 0.6-0.75)


def test_optimal_lengths_resemble_upstream(rl_maps):
  """Not a design target, a sanity check: with the same density and uniform start/goal, the optimal
  route lengths of generated 5x5 maps (min length 2, as upstream) have about upstream's mean."""
  upstream = np.mean([x["optimal_path_len"] for x in rl_maps if x["level"] == 5])
  generated = np.mean([maps.shortest_path_len(s) for s in generate.generate_maps(5, 1000, seed=5)])
  assert abs(generated - upstream) < 0.4, (generated, upstream)


def test_start_and_goal_anywhere():
  specs = generate.generate_maps(4, 600, seed=2)
  starts = collections.Counter(s.start_pos for s in specs)
  goals = collections.Counter(s.target_pos for s in specs)
  assert set(starts) == set(range(16)) and set(goals) == set(range(16))


def test_eval_hashes_loaded(eval_hashes_reference):
  assert generate.eval_layout_hashes() == eval_hashes_reference
  assert len(eval_hashes_reference) == 1000


def test_load_layout_hashes_recomputes_from_layouts(rl_maps, tmp_path):
  (tmp_path / "rl_maps.json").write_text(json.dumps(rl_maps))
  assert generate.load_layout_hashes(tmp_path / "rl_maps.json") == {x["layout_hash"] for x in rl_maps}
  jsonl = tmp_path / "m.jsonl"
  jsonl.write_text("\n".join(json.dumps(x) for x in rl_maps[:5]) + "\n")
  assert generate.load_layout_hashes(jsonl) == {x["layout_hash"] for x in rl_maps[:5]}
  with pytest.raises(FileNotFoundError, match="not found"):
    generate.load_layout_hashes(tmp_path / "missing.json")
  (tmp_path / "bad.json").write_text(json.dumps([{"start_pos": 0}]))
  with pytest.raises(ValueError, match="no 'layout'"):
    generate.load_layout_hashes(tmp_path / "bad.json")


def test_exclusion_of_eval_maps_at_level_3(eval_hashes_reference):
  # Without exclusion, 3x3 generation hits the 250 eval layouts often: the test below is not vacuous.
  free = generate.generate_maps(3, 1500, seed=0, unique=False)
  assert sum(s.layout_hash in eval_hashes_reference for s in free) > 10
  excluded = generate.generate_maps(3, 1500, seed=0, unique=False, exclude=generate.eval_layout_hashes())
  assert not any(s.layout_hash in eval_hashes_reference for s in excluded)


def test_unique_batches_have_no_repeats():
  specs = generate.generate_maps(3, 800, seed=1)
  assert len({s.layout_hash for s in specs}) == 800
  repeats = generate.generate_maps(3, 800, seed=1, unique=False)
  assert len({s.layout_hash for s in repeats}) < 800


def test_exhausted_exclusion_raises(monkeypatch):
  class Everything(set):
    def __contains__(self, item):
      return True

  monkeypatch.setattr(generate, "_MAX_DENSITY_DRAWS", 2)
  monkeypatch.setattr(generate, "_PLACEMENTS_PER_DENSITY", 3)
  with pytest.raises(RuntimeError, match="no level-3 map"):
    generate.generate_map(np.random.default_rng(0), 3, exclude=Everything())


def test_spec_record_matches_upstream_format(rl_maps):
  upstream_keys = {
    "level",
    "layout",
    "start_pos",
    "target_pos",
    "optimal_actions",
    "optimal_path_len",
    "distance_map",
    "hole_count",
    "layout_hash",
  }
  assert upstream_keys <= set(rl_maps[0])
  for entry in rl_maps[:200]:
    record = generate.spec_record(maps.parse_spec(entry))
    assert set(record) == upstream_keys
    for key in upstream_keys - {"optimal_actions"}:  # ties between optimal routes may break differently
      assert record[key] == entry[key], key
    spec = maps.parse_spec(record)
    assert maps.is_exact_match(spec, [maps.SHORT_TO_MOVE[a] for a in record["optimal_actions"]])


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(level=2, n=1, seed=0), "level must be in 3..12"),
    (dict(level=13, n=1, seed=0), "level must be in 3..12"),
    (dict(level="5", n=1, seed=0), "level must be an int"),
    (dict(level=5, n=-1, seed=0), "n must be a non-negative int"),
    (dict(level=5, n=1, seed=0.5), "seed must be an int"),
    (dict(level=5, n=1, seed=0, min_path_len=0), "min_path_len must be in 1..8"),
    (dict(level=5, n=1, seed=0, min_path_len=9), "min_path_len must be in 1..8"),
  ],
)
def test_bad_arguments_raise(kwargs, message):
  with pytest.raises(ValueError, match=message):
    generate.generate_maps(**kwargs)


def test_generate_map_wants_a_generator():
  with pytest.raises(TypeError, match="numpy.random.Generator"):
    generate.generate_map(0, 5)


def test_cli_generate(tmp_path, eval_hashes_reference):
  out = tmp_path / "maps.jsonl"
  main(["generate", "--level", "3", "--n", "300", "--seed", "0", "--out", str(out), "--exclude-eval"])
  records = [json.loads(line) for line in out.read_text().splitlines()]
  assert len(records) == 300
  assert len({r["layout_hash"] for r in records}) == 300
  assert not {r["layout_hash"] for r in records} & eval_hashes_reference
  for r in records:
    spec = maps.parse_spec(r, require_reachable=True)
    assert r["optimal_path_len"] == maps.shortest_path_len(spec) >= 2
    assert r["layout_hash"] == hashlib.sha256("".join("".join(x) for x in r["layout"]).encode()).hexdigest()
  again = tmp_path / "again.jsonl"
  main(["generate", "--level", "3", "--n", "300", "--seed", "0", "--out", str(again), "--exclude-eval"])
  assert again.read_text() == out.read_text()
  with pytest.raises(SystemExit, match="level must be in 3..12"):
    main(["generate", "--level", "2", "--n", "1", "--seed", "0", "--out", str(tmp_path / "x.jsonl")])
