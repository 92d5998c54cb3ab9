r"""VRRL vs GRPO vs reflection-SFT at laptop scale: RL arms from one SFT warm start, several seeds, greedy eval on every
eval map, bootstrap intervals, the grounding probe, a table and figures.

  python bench/vrrl_vs_grpo.py --workdir runs/vrrl_vs_grpo            # the whole sweep; rerun the same to resume
  python bench/vrrl_vs_grpo.py --workdir runs/vrrl_vs_grpo --report   # only the report, from the finished runs

Stages, each an ordinary resumable ``python -m vrrl_jax.train`` run (an interrupted sweep continues where it stopped):
1. The warm start: the config's SFT with ``rl.steps=0`` in ``W/warm_s<warm_seed>``. Its greedy eval is the
   ``sft_only`` arm (one policy: RL seeds do not apply to it). Its policy is exported with ``vrrl_jax.convert
   train-to-orbax`` to ``W/warm_s<warm_seed>/policy``.
2. Each RL arm x seed in ``W/<arm>/seed<k>``, seed-major (one seed of every arm first), ``--parallel`` at a time: ``init_checkpoint`` the
   exported policy, ``sft.steps=0``, the config's RL. Every arm has the same steps, prompts and samples; the arms
   differ only in the rollout-mode weights (``ARMS``). The seed changes RL sampling, prompt order and modes.
   A workdir holds one warm start (``W/sweep.json`` says which); a second warm start needs its own workdir.
3. The report: one results JSON per run under ``--results``, ``table_warm<warm_seed>.md`` and
   ``summary_warm<warm_seed>.json`` beside them, two PNGs ``vrrl_vs_grpo_warm<warm_seed>_*.png`` under ``--figures``
   (training reward per RL step, mean and min-max band over seeds; optimal_rate per arm with 95% intervals), and
   one JSON line on stdout.

Every eval runs the config's ``eval`` with ``maps_per_level=250``: all release maps of L3-L6 and 250 generated L7 maps
in the out-of-distribution render style. Intervals: ``vrrl_jax.stats`` (bootstrap over maps and seeds, maps paired
between arms).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np

from vrrl_jax import experiment, figures, stats
from vrrl_jax import metrics as metrics_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
SFT_ONLY, VRRL, GRPO = "sft_only", "vrrl", "grpo"
# Rollout-mode weights (normal, random_start = RandomTurnMasking, prefix_buffer = buffered roll-ins). An ablation
# gives the removed component's share to normal rollouts, so the other component keeps its released share.
ARMS = {
  SFT_ONLY: None,
  GRPO: (1.0, 0.0, 0.0),
  VRRL: (0.0, 0.6, 0.4),  # the released weights
  "vrrl_no_masking": (0.6, 0.0, 0.4),
  "vrrl_no_buffer": (0.4, 0.6, 0.0),
}
LABELS = {
  SFT_ONLY: "reflection SFT only",
  GRPO: "GRPO (normal rollouts)",
  VRRL: "VRRL (released modes)",
  "vrrl_no_masking": "VRRL without RandomTurnMasking",
  "vrrl_no_buffer": "VRRL without buffered roll-ins",
}
EVAL_OVERRIDES = ("--config.eval.maps_per_level=250", "--config.eval.before_rl=False")
MAX_GAP_S = 1800  # metric timestamps further apart than this are an interruption, not compute


def warm_overrides(warm_seed: int, extra: list[str]) -> list[str]:
  """The warm start's flags: the sweep's eval, then the user's, then what makes it the warm start (these win)."""
  common = [*EVAL_OVERRIDES, "--config.checkpoint.every=250", "--config.checkpoint.keep=2"]
  return common + extra + [f"--config.seed={warm_seed}", "--config.rl.steps=0"]


def arm_overrides(arm: str, seed: int, policy: pathlib.Path, extra: list[str]) -> list[str]:
  """An RL run's flags: the sweep's eval, then the user's, then what defines the arm and seed (these win)."""
  normal, random_start, prefix_buffer = ARMS[arm]
  common = [*EVAL_OVERRIDES, "--config.checkpoint.every=5", "--config.checkpoint.keep=2"]
  return (
    common
    + extra
    + [
      f"--config.seed={seed}",
      f"--config.init_checkpoint={policy}",
      "--config.sft.steps=0",
      f"--config.rl.mode_weights.normal={normal}",
      f"--config.rl.mode_weights.random_start={random_start}",
      f"--config.rl.mode_weights.prefix_buffer={prefix_buffer}",
    ]
  )


def is_done(run_dir: pathlib.Path) -> bool:
  return (run_dir / "eval_after_rl" / "episodes.jsonl").is_file()


def train(config: str, run_dir: pathlib.Path, overrides: list[str], log_path: pathlib.Path) -> None:
  """One training run (resumed if it has checkpoints), its output appended to ``log_path``."""
  cmd = [sys.executable, "-m", "vrrl_jax.train", f"--config={config}", f"--workdir={run_dir}", *overrides]
  print(f"[sweep] {' '.join(cmd)}", file=sys.stderr, flush=True)
  with open(log_path, "a") as log:
    result = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
  if result.returncode != 0 or not is_done(run_dir):
    raise SystemExit(f"run {run_dir} failed (exit {result.returncode}); its log: {log_path}")


def export_policy(config: str, warm: pathlib.Path, overrides: list[str]) -> pathlib.Path:
  policy = warm / "policy"
  if (policy / "vrrl_config.json").is_file():
    return policy
  shutil.rmtree(policy, ignore_errors=True)  # an export that did not finish
  cmd = [sys.executable, "-m", "vrrl_jax.convert", "train-to-orbax", "--config", config]
  cmd += ["--checkpoint", str(warm / "checkpoints"), "--out", str(policy), *overrides]
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  if result.returncode != 0:
    raise SystemExit(f"exporting the warm start failed: {result.stderr[-2000:]}")
  return policy


# ----------------------------------------------------------------------------------------------------------------
# Results.


def wall_seconds(records: list[dict]) -> float:
  """Seconds of the run's own compute, from its metric timestamps (gaps over MAX_GAP_S are interruptions)."""
  times = sorted(r["wall_time"] for r in records if r.get("wall_time") is not None)
  first = next((r.get("time/step", 0.0) for r in records if r.get("time/step") is not None), 0.0)
  return float(first + sum(min(b - a, MAX_GAP_S) for a, b in zip(times, times[1:])))


def run_result(run_dir: pathlib.Path, arm: str, seed: int | None, warm_seed: int, overrides: list[str]) -> dict:
  eval_dir = run_dir / "eval_after_rl"
  metrics = json.loads((eval_dir / "metrics.json").read_text())
  episodes = [json.loads(line) for line in (eval_dir / "episodes.jsonl").read_text().splitlines()]
  outcomes = {}
  for line in episodes:
    level = outcomes.setdefault(f"L{line['group']}", {"optimal": [], "turn1_optimal": []})
    level["optimal"].append(int(line["record"]["optimal"]))
    level["turn1_optimal"].append(int(line["record"]["turn1_optimal"]))
  records = metrics_lib.read_metrics(run_dir)
  rl = [r for r in records if r.get("reward/overall") is not None and not any(k.startswith("eval") for k in r)]
  return {
    "arm": arm,
    "seed": seed,
    "warm_seed": warm_seed,
    "overrides": overrides,
    "wall_s": round(wall_seconds(records), 1),
    "in_distribution_levels": list(metrics["in_distribution"]["levels"]),
    "out_of_distribution_levels": list(metrics["out_of_distribution"]["levels"]),
    "train_reward": [round(float(r["reward/overall"]), 6) for r in rl],
    "train_em": [round(float(r["reward/em"]), 6) for r in rl],
    "eval": outcomes,
    "grounding_probe": [
      bool(line["correction_survived"]) for line in episodes if line["correction_survived"] is not None
    ],
    "headline": {
      "in_distribution/optimal_rate": metrics["in_distribution"]["optimal_rate"],
      "out_of_distribution/optimal_rate": metrics["out_of_distribution"]["optimal_rate"],
      **{f"{k}/optimal_rate": v["optimal_rate"] for k, v in metrics["by_level"].items()},
      "overall/format_error_rate": metrics["overall"]["format_error_rate"],
    },
  }


def outcome_groups(results: list[dict], levels: list[str], key: str = "optimal") -> dict[str, np.ndarray]:
  """level -> [seeds, maps] outcomes of one arm's runs."""
  return {level: np.array([r["eval"][level][key] for r in results], np.float64) for level in levels}


def summarize(by_arm: dict[str, list[dict]], num_samples: int = 4000) -> dict:
  first = next(iter(by_arm.values()))[0]
  splits = {
    "in_distribution": first["in_distribution_levels"],
    "out_of_distribution": first["out_of_distribution_levels"],
    **{level: [level] for level in first["in_distribution_levels"] + first["out_of_distribution_levels"]},
  }
  summary: dict = {"arms": {arm: {"seeds": [r["seed"] for r in runs]} for arm, runs in by_arm.items()}}
  for split, levels in splits.items():
    reps = stats.bootstrap_means(
      {arm: outcome_groups(runs, levels) for arm, runs in by_arm.items()}, num_samples=num_samples
    )
    for arm, runs in by_arm.items():
      summary["arms"][arm][split] = {
        "optimal_rate": stats.point_mean(outcome_groups(runs, levels)),
        "ci95": stats.percentile_interval(reps[arm]),
        "turn1_optimal_rate": stats.point_mean(outcome_groups(runs, levels, "turn1_optimal")),
      }
    if VRRL in by_arm:
      for arm in by_arm:
        if arm != VRRL:
          diff = reps[VRRL] - reps[arm]
          summary.setdefault("vrrl_minus", {}).setdefault(arm, {})[split] = {
            "difference": summary["arms"][VRRL][split]["optimal_rate"] - summary["arms"][arm][split]["optimal_rate"],
            "ci95": stats.percentile_interval(diff),
          }
  for arm, runs in by_arm.items():
    probe = [survived for r in runs for survived in r["grounding_probe"]]
    summary["arms"][arm]["grounding_probe"] = {
      "n_corrections": len(probe),
      "survival_rate": sum(probe) / len(probe) if probe else None,
      "ci95": stats.wilson_interval(sum(probe), len(probe)) if probe else None,
    }
    curves = [r["train_reward"] for r in runs if len(r["train_reward"]) >= 3]
    if curves:
      summary["arms"][arm]["train_reward"] = {
        "first10": float(np.mean([np.mean(c[:10]) for c in curves])),
        "last10": float(np.mean([np.mean(c[-10:]) for c in curves])),
        "slope_p_per_seed": [stats.slope_test(c)[1] for c in curves],
      }
    summary["arms"][arm]["wall_s_per_run"] = float(np.mean([r["wall_s"] for r in runs]))
  return summary


def _interval(entry: dict) -> str:
  lo, hi = entry["ci95"]
  return f"{entry['optimal_rate']:.3f} [{lo:.3f}, {hi:.3f}]"


def table(summary: dict) -> str:
  rows = [
    "| arm | seeds | in distribution (L3-L5) | out of distribution (L6-L7) | L6 | L7 (OOD style) | turn 1 -> final, "
    "in distribution | grounding probe: corrections kept (n) | training reward, first 10 -> last 10 steps "
    "(slope p per seed) | wall per run |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ]
  for arm, s in summary["arms"].items():
    probe = s["grounding_probe"]
    probe_text = "no corrections"
    if probe["n_corrections"]:
      lo, hi = probe["ci95"]
      probe_text = f"{probe['survival_rate']:.2f} [{lo:.2f}, {hi:.2f}] ({probe['n_corrections']})"
    reward = s.get("train_reward")
    reward_text = "-"
    if reward:
      ps = ", ".join(f"{p:.2f}" for p in reward["slope_p_per_seed"])
      reward_text = f"{reward['first10']:.3f} -> {reward['last10']:.3f} (p {ps})"
    ind = s["in_distribution"]
    seeds = "one policy" if arm == SFT_ONLY else ", ".join(str(x) for x in s["seeds"])
    rows.append(
      f"| {LABELS.get(arm, arm)} | {seeds} | {_interval(ind)} | {_interval(s['out_of_distribution'])} | "
      f"{_interval(s['L6'])} | {_interval(s['L7'])} | {ind['turn1_optimal_rate']:.3f} -> {ind['optimal_rate']:.3f} | "
      f"{probe_text} | {reward_text} | {s['wall_s_per_run'] / 60:.1f} min |"
    )
  if "vrrl_minus" in summary:
    rows += ["", "| VRRL minus | in distribution | out of distribution |", "| --- | --- | --- |"]
    for arm, d in summary["vrrl_minus"].items():
      cells = []
      for split in ("in_distribution", "out_of_distribution"):
        lo, hi = d[split]["ci95"]
        cells.append(f"{d[split]['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
      rows.append(f"| {LABELS.get(arm, arm)} | {cells[0]} | {cells[1]} |")
  return "\n".join(rows) + "\n"


def draw_figures(by_arm: dict[str, list[dict]], summary: dict, out: pathlib.Path, warm_seed: int) -> list[pathlib.Path]:
  out.mkdir(parents=True, exist_ok=True)
  series, bands, colours = {}, {}, {}
  for arm, runs in by_arm.items():
    curves = [figures.moving_average(r["train_reward"], 5) for r in runs if r["train_reward"]]
    if not curves:
      continue
    length = min(len(c) for c in curves)
    values = np.array([c[:length] for c in curves])
    xs = list(range(1, length + 1))
    series[LABELS.get(arm, arm)] = (xs, values.mean(axis=0).tolist())
    bands[LABELS.get(arm, arm)] = (xs, values.min(axis=0).tolist(), values.max(axis=0).tolist())
    colours[LABELS.get(arm, arm)] = figures.COLOURS[list(by_arm).index(arm) % len(figures.COLOURS)]  # as in the bars
  paths = []
  if series:
    curve = figures.line_chart(
      series,
      bands=bands,
      colours=colours,
      title="training reward per RL step (5-step mean; band: min-max over seeds)",
      xlabel="RL step",
      ylabel="reward/overall",
    )
    paths.append(out / f"vrrl_vs_grpo_warm{warm_seed}_training_reward.png")
    curve.save(paths[-1])
  groups = ["in distribution", "L6", "L7 (OOD style)", "out of distribution"]
  keys = ["in_distribution", "L6", "L7", "out_of_distribution"]
  bars = {LABELS.get(a, a): [s[k]["optimal_rate"] for k in keys] for a, s in summary["arms"].items()}
  errors = {LABELS.get(a, a): [tuple(s[k]["ci95"]) for k in keys] for a, s in summary["arms"].items()}
  top = max(hi for intervals in errors.values() for _, hi in intervals)
  chart = figures.bar_chart(
    groups,
    bars,
    errors=errors,
    title="greedy optimal_rate per arm (95% bootstrap intervals over maps and seeds)",
    ylabel="optimal_rate",
    y_range=(0.0, min(1.0, max(0.1, round(top + 0.3, 1)))),  # room above the bars for the legend
  )
  paths.append(out / f"vrrl_vs_grpo_warm{warm_seed}_optimal_rate.png")
  chart.save(paths[-1])
  return paths


def claim_workdir(workdir: pathlib.Path, warm_seed: int) -> None:
  """A sweep workdir holds one warm start: RL runs are keyed by arm and seed, so a second warm start in the same
  workdir would take the first one's runs for its own."""
  marker = workdir / "sweep.json"
  if marker.exists():
    claimed = json.loads(marker.read_text())["warm_seed"]
    if claimed != warm_seed:
      raise SystemExit(
        f"{workdir} holds the sweep of warm start {claimed}; warm start {warm_seed} needs its own --workdir"
      )
  else:
    marker.write_text(json.dumps({"warm_seed": warm_seed}) + "\n")


# ----------------------------------------------------------------------------------------------------------------


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--config", default=str(REPO / "configs" / "frozenlake_small_cpu.py"))
  parser.add_argument("--seeds", default="0,1,2", help="RL seeds per arm")
  parser.add_argument("--warm_seed", type=int, default=0, help="the SFT warm start's seed")
  parser.add_argument("--arms", default=",".join(ARMS), help=f"a subset of {','.join(ARMS)}")
  parser.add_argument("--results", default=str(REPO / "bench" / "results" / "vrrl_vs_grpo"))
  parser.add_argument("--figures", default=str(REPO / "docs" / "figures"))
  parser.add_argument("--parallel", type=int, default=1, help="RL runs at a time (2 fills a 2-core CPU better)")
  parser.add_argument("--report", action="store_true", help="no training: the report from the finished runs")
  args, extra = parser.parse_known_args(argv)
  experiment.load_config(args.config, extra)  # a bad override fails here, before any run starts
  arms = [a for a in args.arms.split(",") if a]
  if unknown := sorted(set(arms) - set(ARMS)):
    raise SystemExit(f"unknown arms {unknown}; known: {list(ARMS)}")
  seeds = [int(s) for s in args.seeds.split(",") if s]
  workdir = pathlib.Path(args.workdir).resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  claim_workdir(workdir, args.warm_seed)
  warm = workdir / f"warm_s{args.warm_seed}"
  warm_args = warm_overrides(args.warm_seed, extra)
  t0 = time.perf_counter()
  plan = [(arm, seed) for seed in seeds for arm in arms if arm != SFT_ONLY]
  if not args.report:
    if not is_done(warm):
      train(args.config, warm, warm_args, workdir / f"{warm.name}.log")
    policy = export_policy(args.config, warm, warm_args)
    todo = [(arm, seed) for arm, seed in plan if not is_done(workdir / arm / f"seed{seed}")]
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
      runs = [
        pool.submit(
          train,
          args.config,
          workdir / arm / f"seed{seed}",
          arm_overrides(arm, seed, policy, extra),
          workdir / f"{arm}_seed{seed}.log",
        )
        for arm, seed in todo
      ]
      for run in runs:
        run.result()  # the first failure stops the sweep (after the runs in flight end)

  results_dir = pathlib.Path(args.results)
  results_dir.mkdir(parents=True, exist_ok=True)
  by_arm: dict[str, list[dict]] = {}
  if SFT_ONLY in arms and is_done(warm):
    by_arm[SFT_ONLY] = [run_result(warm, SFT_ONLY, None, args.warm_seed, warm_args)]
  for arm, seed in plan:
    run_dir = workdir / arm / f"seed{seed}"
    if is_done(run_dir):
      result = run_result(run_dir, arm, seed, args.warm_seed, arm_overrides(arm, seed, warm / "policy", extra))
      by_arm.setdefault(arm, []).append(result)
  if not by_arm:
    raise SystemExit(f"no finished run under {workdir}")
  for arm, runs in by_arm.items():
    for r in runs:
      name = f"{arm}_warm{args.warm_seed}" + ("" if r["seed"] is None else f"_seed{r['seed']}")
      (results_dir / f"{name}.json").write_text(json.dumps(r) + "\n")
  summary = summarize(by_arm)
  (results_dir / f"table_warm{args.warm_seed}.md").write_text(table(summary))
  (results_dir / f"summary_warm{args.warm_seed}.json").write_text(json.dumps(summary, indent=1) + "\n")
  paths = draw_figures(by_arm, summary, pathlib.Path(args.figures), args.warm_seed)
  missing = [f"{arm}/seed{seed}" for arm, seed in plan if not is_done(workdir / arm / f"seed{seed}")]
  line = {
    "bench": "vrrl_vs_grpo",
    "config": args.config,
    "warm_seed": args.warm_seed,
    "finished_runs": {arm: len(runs) for arm, runs in by_arm.items()},
    "missing_runs": missing,
    "in_distribution": {a: round(s["in_distribution"]["optimal_rate"], 4) for a, s in summary["arms"].items()},
    "out_of_distribution": {a: round(s["out_of_distribution"]["optimal_rate"], 4) for a, s in summary["arms"].items()},
    "figures": [str(p) for p in paths],
    "seconds": round(time.perf_counter() - t0, 1),
  }
  print(json.dumps(line))


if __name__ == "__main__":
  main()
