"""The pooled-rate summary on hand-made evals, against rates counted by hand."""

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def pooled_rate(bench_script):
  return bench_script("pooled_rate")


def test_a_results_json_and_an_episodes_file_read_the_same(pooled_rate, tmp_path):
  result = tmp_path / "r.json"
  result.write_text(json.dumps({"eval": {"L3": {"optimal": [1, 0, 1]}, "L6": {"optimal": [0, 0, 1]}}}))
  episodes = tmp_path / "episodes.jsonl"
  records = [(3, True), (3, False), (3, True), (6, False), (6, False), (6, True)]
  episodes.write_text("\n".join(json.dumps({"record": {"level": lv, "optimal": ok}}) for lv, ok in records) + "\n")
  a, b = pooled_rate.outcomes(result), pooled_rate.outcomes(episodes)
  assert {k: list(v) for k, v in a.items()} == {k: list(v) for k, v in b.items()} == {"L3": [1, 0, 1], "L6": [0, 0, 1]}


def test_per_run_and_pooled_rates_counted_by_hand(pooled_rate):
  ones, zeros = [1.0] * 4, [0.0] * 4
  run_a = {"L3": ones, "L4": ones, "L5": zeros, "L6": ones, "L7": zeros}  # in distribution 8/12
  run_b = {"L3": zeros, "L4": zeros, "L5": zeros, "L6": [1.0, 0, 0, 0], "L7": zeros}  # 0/12
  out = pooled_rate.summary([{k: np.array(v) for k, v in r.items()} for r in (run_a, run_b)], 500)
  assert out["in_distribution"]["per_run"] == pytest.approx([8 / 12, 0.0])
  assert out["in_distribution"]["pooled"] == pytest.approx(8 / 24)
  assert out["L6"]["per_run"] == pytest.approx([1.0, 0.25]) and out["L6"]["pooled"] == pytest.approx(5 / 8)
  assert out["L7"]["ci95"] == (0.0, 0.0)  # nothing solved anywhere: no spread
  low, high = out["in_distribution"]["ci95"]
  assert 0.0 <= low < 8 / 24 < high <= 8 / 12  # runs resampled: the interval spans the two runs' rates


def test_runs_on_different_maps_are_refused(pooled_rate, tmp_path, monkeypatch):
  a, b = tmp_path / "a.json", tmp_path / "b.json"
  a.write_text(json.dumps({"eval": {"L3": {"optimal": [1, 0]}}}))
  b.write_text(json.dumps({"eval": {"L3": {"optimal": [1, 0, 1]}}}))
  monkeypatch.setattr("sys.argv", ["pooled_rate.py", str(a), str(b)])
  with pytest.raises(SystemExit, match="maps per level"):
    pooled_rate.main()
