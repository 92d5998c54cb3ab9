r"""Greedy optimal_rate of several runs' evals on the same maps, per run and pooled, with bootstrap intervals: for
runs that are not pairs of an SFT-only and an RL result (``sft_seeds.py`` wants those), such as the config run end to
end and evaluated afterwards with ``python -m vrrl_jax.eval``.

  python bench/pooled_rate.py R/vrrl_warm0_seed0.json W/eval/episodes.jsonl ...

Each argument is a ``vrrl_vs_grpo.py`` results JSON (its ``eval`` field) or an eval's ``episodes.jsonl``. Every run
must hold the same levels with the same number of maps. Pooled rates resample runs and maps (``vrrl_jax.stats``, 95%).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib

import numpy as np

from vrrl_jax import stats

SPLITS = {"in_distribution": ("L3", "L4", "L5"), "L6": ("L6",), "L7": ("L7",)}


def outcomes(path: pathlib.Path) -> dict[str, np.ndarray]:
  """level -> per-map greedy optimal outcomes (0/1), from a results JSON or an ``episodes.jsonl``."""
  if path.suffix == ".jsonl":
    by_level = collections.defaultdict(list)
    for line in path.read_text().splitlines():
      record = json.loads(line)["record"]
      by_level[f"L{record['level']}"].append(float(record["optimal"]))
    return {level: np.array(v) for level, v in by_level.items()}
  return {level: np.array(v["optimal"], np.float64) for level, v in json.loads(path.read_text())["eval"].items()}


def summary(runs: list[dict[str, np.ndarray]], num_samples: int = 4000) -> dict:
  out = {}
  for split, levels in SPLITS.items():
    if not all(level in run for run in runs for level in levels):
      continue
    groups = {level: np.stack([run[level] for run in runs]) for level in levels}
    reps = stats.bootstrap_means({"runs": groups}, num_samples=num_samples)["runs"]
    per_run = [float(np.concatenate([run[level] for level in levels]).mean()) for run in runs]
    out[split] = {"per_run": per_run, "pooled": stats.point_mean(groups), "ci95": stats.percentile_interval(reps)}
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", nargs="+", type=pathlib.Path)
  args = parser.parse_args()
  runs = [outcomes(p) for p in args.runs]
  first = {level: len(v) for level, v in runs[0].items()}
  for path, run in zip(args.runs, runs):
    shapes = {level: len(v) for level, v in run.items()}
    if shapes != first:
      raise SystemExit(f"{path}: maps per level {shapes}, but {args.runs[0]} has {first}")
  print(json.dumps({"bench": "pooled_rate", "runs": [str(p) for p in args.runs], **summary(runs)}))


if __name__ == "__main__":
  main()
