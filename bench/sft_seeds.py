r"""The small config over SFT seeds: reflection SFT alone and SFT + the config's RL for each warm start, per seed and
pooled, so that a result is reported over the seed that decides it most (BENCHMARKS.md, "VRRL vs GRPO vs reflection
SFT": the SFT seed moved in-distribution accuracy from 0.06 to 0.40, more than any RL arm did).

  for S in 0 1 2; do python bench/vrrl_vs_grpo.py --workdir W$S --warm_seed S --seeds 0 --arms sft_only,vrrl \
      --results R; done
  python bench/sft_seeds.py --results R --warm_seeds 0,1,2

Reads the results JSON that ``vrrl_vs_grpo.py`` writes per run (``sft_only_warm<S>.json`` and
``vrrl_warm<S>_seed<k>.json``), writes ``R/sft_seeds.md`` (the table) and ``R/sft_seeds.json``, and prints one JSON
line. Intervals: ``vrrl_jax.stats``, 95%. Pooled rates resample maps and SFT seeds; "RL minus SFT" is paired, within
each SFT seed (the RL run starts from that seed's SFT policy) and over maps (both are evaluated on the same maps).
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from vrrl_jax import stats

SPLITS = ("in_distribution", "out_of_distribution")


def load_pair(results: pathlib.Path, warm_seed: int, rl_arm: str, rl_seed: int) -> tuple[dict, dict]:
  """One warm start's SFT-only result and its RL run's result."""
  paths = (results / f"sft_only_warm{warm_seed}.json", results / f"{rl_arm}_warm{warm_seed}_seed{rl_seed}.json")
  missing = [str(p) for p in paths if not p.is_file()]
  if missing:
    raise SystemExit(f"missing results {missing}: run bench/vrrl_vs_grpo.py for warm start {warm_seed} first")
  sft, rl = (json.loads(p.read_text()) for p in paths)
  for r in (sft, rl):
    if r["warm_seed"] != warm_seed:
      raise SystemExit(f"a result for warm start {r['warm_seed']} is filed under warm start {warm_seed}")
  return sft, rl


def levels_of(result: dict, split: str) -> list[str]:
  return list(result[f"{split}_levels"]) if split in SPLITS else [split]


def outcomes(runs: list[dict], levels: list[str]) -> dict[str, np.ndarray]:
  """level -> [runs, maps] greedy optimal outcomes (0/1)."""
  return {level: np.array([r["eval"][level]["optimal"] for r in runs], np.float64) for level in levels}


def rate(runs: list[dict], levels: list[str], num_samples: int) -> dict:
  groups = outcomes(runs, levels)
  reps = stats.bootstrap_means({"runs": groups}, num_samples=num_samples)["runs"]
  return {"optimal_rate": stats.point_mean(groups), "ci95": stats.percentile_interval(reps)}


def paired_difference(rl: list[dict], sft: list[dict], levels: list[str], num_samples: int) -> dict:
  """RL minus SFT: per SFT seed and map, then the bootstrap over both (row k of ``rl`` started from row k of ``sft``)."""
  rl_out, sft_out = outcomes(rl, levels), outcomes(sft, levels)
  diff = {level: rl_out[level] - sft_out[level] for level in levels}
  reps = stats.bootstrap_means({"diff": diff}, num_samples=num_samples)["diff"]
  return {"difference": stats.point_mean(diff), "ci95": stats.percentile_interval(reps)}


def summarize(pairs: dict[int, tuple[dict, dict]], num_samples: int = 4000) -> dict:
  """Per warm seed and pooled: SFT and RL rates per split and level, RL minus SFT, the RL training reward."""
  first_sft = next(iter(pairs.values()))[0]
  splits = [*SPLITS, *levels_of(first_sft, "in_distribution"), *levels_of(first_sft, "out_of_distribution")]
  groups = {str(seed): ([sft], [rl]) for seed, (sft, rl) in pairs.items()}
  groups["pooled"] = ([sft for sft, _ in pairs.values()], [rl for _, rl in pairs.values()])
  out: dict = {"warm_seeds": list(pairs), "rl_seeds": [rl["seed"] for _, rl in pairs.values()]}
  for name, (sft, rl) in groups.items():
    entry: dict = {}
    for split in splits:
      levels = levels_of(first_sft, split)
      entry[split] = {
        "sft": rate(sft, levels, num_samples),
        "rl": rate(rl, levels, num_samples),
        "rl_minus_sft": paired_difference(rl, sft, levels, num_samples),
      }
    curves = [r["train_reward"] for r in rl if len(r["train_reward"]) >= 3]
    if name != "pooled" and curves:
      entry["train_reward"] = {
        "first10": float(np.mean(curves[0][:10])),
        "last10": float(np.mean(curves[0][-10:])),
        "slope_p": stats.slope_test(curves[0])[1],
      }
    entry["wall_s"] = {
      "sft": float(np.mean([r["wall_s"] for r in sft])),
      "rl": float(np.mean([r["wall_s"] for r in rl])),
    }
    out[name] = entry
  return out


def _cell(entry: dict, key: str = "optimal_rate", sign: str = "") -> str:
  lo, hi = entry["ci95"]
  return f"{entry[key]:{sign}.3f} [{lo:{sign}.3f}, {hi:{sign}.3f}]"


def table(summary: dict) -> str:
  rows = [
    "| SFT seed | in distribution: SFT | SFT + RL | RL minus SFT | L6: SFT | L6: SFT + RL | L7: SFT + RL | "
    "training reward, first 10 -> last 10 RL steps (slope p) | wall: SFT, RL |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ]
  for name in [str(s) for s in summary["warm_seeds"]] + ["pooled"]:
    e = summary[name]
    ind, l6, l7 = e["in_distribution"], e["L6"], e["L7"]
    reward = e.get("train_reward")
    reward_text = f"{reward['first10']:.3f} -> {reward['last10']:.3f} (p {reward['slope_p']:.2f})" if reward else "-"
    label = "**pooled**" if name == "pooled" else name
    rows.append(
      f"| {label} | {_cell(ind['sft'])} | {_cell(ind['rl'])} | {_cell(ind['rl_minus_sft'], 'difference', '+')} | "
      f"{_cell(l6['sft'])} | {_cell(l6['rl'])} | {_cell(l7['rl'])} | {reward_text} | "
      f"{e['wall_s']['sft'] / 60:.1f} min, {e['wall_s']['rl'] / 60:.1f} min |"
    )
  return "\n".join(rows) + "\n"


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--results", required=True, help="the --results folder the vrrl_vs_grpo.py runs wrote")
  parser.add_argument("--warm_seeds", default="0,1,2")
  parser.add_argument("--rl_arm", default="vrrl", help="the RL arm run from each warm start")
  parser.add_argument("--rl_seed", type=int, default=0)
  args = parser.parse_args(argv)
  results = pathlib.Path(args.results)
  seeds = [int(s) for s in args.warm_seeds.split(",") if s]
  if not seeds:
    raise SystemExit("--warm_seeds names no seed")
  pairs = {s: load_pair(results, s, args.rl_arm, args.rl_seed) for s in seeds}
  summary = summarize(pairs)
  (results / "sft_seeds.md").write_text(table(summary))
  (results / "sft_seeds.json").write_text(json.dumps(summary, indent=1) + "\n")
  pooled = summary["pooled"]
  line = {
    "bench": "sft_seeds",
    "results": str(results),
    "warm_seeds": seeds,
    "rl_arm": args.rl_arm,
    "rl_seed": args.rl_seed,
    "pooled": {
      split: {
        "sft": round(pooled[split]["sft"]["optimal_rate"], 4),
        "rl": round(pooled[split]["rl"]["optimal_rate"], 4),
        "rl_minus_sft": round(pooled[split]["rl_minus_sft"]["difference"], 4),
        "rl_minus_sft_ci95": [round(x, 4) for x in pooled[split]["rl_minus_sft"]["ci95"]],
      }
      for split in (*SPLITS, "L6", "L7")
    },
    "per_seed_in_distribution": {
      str(s): [round(summary[str(s)]["in_distribution"][k]["optimal_rate"], 4) for k in ("sft", "rl")] for s in seeds
    },
  }
  print(json.dumps(line))


if __name__ == "__main__":
  main()
