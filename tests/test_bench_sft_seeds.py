"""The SFT-seed summary on hand-made results, against rates and differences counted by hand."""

import json

import pytest


@pytest.fixture(scope="module")
def sft_seeds(bench_script):
  return bench_script("sft_seeds")


def result(arm, warm_seed, seed, l3, l6, l7, train_reward=()):
  return {
    "arm": arm,
    "seed": seed,
    "warm_seed": warm_seed,
    "wall_s": 60.0,
    "in_distribution_levels": ["L3"],
    "out_of_distribution_levels": ["L6", "L7"],
    "train_reward": list(train_reward),
    "eval": {name: {"optimal": list(v)} for name, v in (("L3", l3), ("L6", l6), ("L7", l7))},
  }


def write(tmp_path, pairs):
  for warm_seed, (sft, rl) in pairs.items():
    (tmp_path / f"sft_only_warm{warm_seed}.json").write_text(json.dumps(sft))
    (tmp_path / f"vrrl_warm{warm_seed}_seed0.json").write_text(json.dumps(rl))


def test_rates_and_paired_differences_counted_by_hand(sft_seeds, tmp_path, capsys):
  write(
    tmp_path,
    {
      # seed 0: SFT solves 2 of 4 L3 maps, RL 3 of 4 (one map gained); seed 1: SFT 0 of 4, RL 2 of 4.
      0: (
        result("sft_only", 0, None, [1, 1, 0, 0], [1, 0], [0, 0]),
        result("vrrl", 0, 0, [1, 1, 1, 0], [0, 0], [0, 1], [0.1, 0.2, 0.3, 0.4]),
      ),
      1: (
        result("sft_only", 1, None, [0, 0, 0, 0], [0, 0], [0, 0]),
        result("vrrl", 1, 0, [0, 1, 1, 0], [1, 0], [0, 0], [0.3, 0.3, 0.3, 0.3, 0.2]),
      ),
    },
  )
  sft_seeds.main(["--results", str(tmp_path), "--warm_seeds", "0,1"])
  line = json.loads(capsys.readouterr().out)
  summary = json.loads((tmp_path / "sft_seeds.json").read_text())
  ind0, ind1, pooled = (summary[k]["in_distribution"] for k in ("0", "1", "pooled"))
  assert (ind0["sft"]["optimal_rate"], ind0["rl"]["optimal_rate"]) == (0.5, 0.75)
  assert (ind1["sft"]["optimal_rate"], ind1["rl"]["optimal_rate"]) == (0.0, 0.5)
  assert ind0["rl_minus_sft"]["difference"] == 0.25
  assert (pooled["sft"]["optimal_rate"], pooled["rl"]["optimal_rate"]) == (0.25, 0.625)
  assert pooled["rl_minus_sft"]["difference"] == pytest.approx(0.375)
  # out of distribution pools L6 (2 maps) and L7 (2 maps): seed 0 SFT 1/4, RL 1/4; seed 1 SFT 0/4, RL 1/4
  ood = summary["pooled"]["out_of_distribution"]
  assert (ood["sft"]["optimal_rate"], ood["rl"]["optimal_rate"]) == (0.125, 0.25)
  for entry in (ind0["sft"], ind0["rl"], pooled["sft"], pooled["rl"], pooled["rl_minus_sft"]):
    lo, hi = entry["ci95"]
    value = entry.get("optimal_rate", entry.get("difference"))
    assert lo <= value <= hi
  # seed 0's reward rises on a line: slope p = 0; first/last 10 are the whole 4-step curve
  assert summary["0"]["train_reward"]["slope_p"] == pytest.approx(0.0, abs=1e-9)
  assert summary["0"]["train_reward"]["first10"] == pytest.approx(0.25)
  assert line["per_seed_in_distribution"] == {"0": [0.5, 0.75], "1": [0.0, 0.5]}
  table = (tmp_path / "sft_seeds.md").read_text().splitlines()
  assert [row.split("|")[1].strip() for row in table[2:]] == ["0", "1", "**pooled**"]


def test_a_difference_the_same_on_every_map_and_seed_has_no_spread(sft_seeds):
  pairs = {
    s: (result("sft_only", s, None, [0, 0, 0], [0], [0]), result("vrrl", s, 0, [1, 1, 1], [1], [1])) for s in (0, 1, 2)
  }
  diff = sft_seeds.summarize(pairs, num_samples=200)["pooled"]["in_distribution"]["rl_minus_sft"]
  assert diff == {"difference": 1.0, "ci95": (1.0, 1.0)}


def test_a_missing_run_is_named(sft_seeds, tmp_path):
  write(tmp_path, {0: (result("sft_only", 0, None, [1], [0], [0]), result("vrrl", 0, 0, [1], [0], [0]))})
  (tmp_path / "vrrl_warm0_seed0.json").unlink()
  with pytest.raises(SystemExit, match="vrrl_warm0_seed0.json"):
    sft_seeds.main(["--results", str(tmp_path), "--warm_seeds", "0"])
  (tmp_path / "sft_only_warm1.json").write_text(json.dumps(result("sft_only", 0, None, [1], [0], [0])))
  (tmp_path / "vrrl_warm1_seed0.json").write_text(json.dumps(result("vrrl", 1, 0, [1], [0], [0])))
  with pytest.raises(SystemExit, match="warm start 0 is filed under warm start 1"):
    sft_seeds.main(["--results", str(tmp_path), "--warm_seeds", "1"])
