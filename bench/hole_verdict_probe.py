r"""Why the shipped tiny VLM does not learn the pretraining route task's hole verdict ("hole: yes/no", 0.81 held out
against a base rate of 0.78 for "no") while it reads every other part of the feedback image exactly.

  python bench/hole_verdict_probe.py --maps_per_level 64 --routes_per_map 2

Teacher-forced, as pretraining's held-out eval: route examples drawn on the release evaluation maps of L3-L6 (the
pretraining task's own route mix, seeded), split by where the route meets a hole: nowhere, only at its last vertex
(under the star), or under the line before its end. Per split: how often the verdict is right, how often the model
says "yes", and whether the trace was read exactly (so a wrong verdict is not a misread route). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import numpy as np

from vrrl_jax import experiment, stats
from vrrl_jax.pretrain import TINY_VLM_DIR
from vrrl_jax.pretrain import run as pretrain_run
from vrrl_jax.pretrain import tasks as tasks_lib
from vrrl_jax.tasks.frozenlake import maps, release_data

REPO = pathlib.Path(__file__).resolve().parents[1]
NONE, AT_END, BEFORE_END = "no hole", "hole only under the star (last vertex)", "hole under the line before the end"


def hole_split(spec: maps.MapSpec, actions) -> str:
  w = maps.walk(spec, actions)
  if any(w.in_hole[:-1]):
    return BEFORE_END
  return AT_END if w.in_hole[-1] else NONE


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", default=str(TINY_VLM_DIR))
  parser.add_argument("--config", default=str(REPO / "configs" / "pretrain_tiny.py"))
  parser.add_argument("--maps_per_level", type=int, default=64)
  parser.add_argument("--routes_per_map", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  config = experiment.load_config(args.config, [f"--config.init_checkpoint={args.checkpoint}"])
  exp = experiment.build(config)
  params, _ = experiment.initial_params(exp, int(config.seed))
  shardings = jax.tree.map(lambda x: x.sharding, params)
  predict = pretrain_run.make_predict_fn(exp.model, exp.mesh, exp.rules, shardings)
  tokenizer = exp.processor.tokenizer
  rng = np.random.default_rng(args.seed)
  examples, maps_taken = [], {level: 0 for level in config.pretrain.levels}
  for entry in release_data.read_maps(release_data.EVAL_FILE, config.data_dir):
    spec = maps.parse_spec(entry["metadata"], require_reachable=True)
    if maps_taken.get(spec.level, args.maps_per_level) >= args.maps_per_level:
      continue
    maps_taken[spec.level] += 1
    examples += [(spec, tasks_lib.random_route(spec, rng)) for _ in range(args.routes_per_map)]
  rows = [
    pretrain_run.held_out_row(exp, spec, tasks_lib.route_example(spec, a, config.pretrain.style))
    for spec, a in examples
  ]
  counts: dict[str, dict[str, list[float]]] = {}
  scored = pretrain_run.teacher_forced(exp, config, predict, params, rows)
  for (spec, actions), (h, right, predicted) in zip(examples, scored):
    spans = {kind: idx for (kind, _, _), idx in zip(h.example.units, h.unit_tokens)}
    c = counts.setdefault(hole_split(spec, actions), {"right": [], "said_yes": [], "trace_right": []})
    c["right"].append(float(right[spans["hole"]].all()))
    c["said_yes"].append(float(tokenizer.decode(predicted[spans["hole"]]).strip() == "yes"))
    c["trace_right"].append(float(right[spans["trace"]].all()))
  out = {"bench": "hole_verdict_probe", "checkpoint": args.checkpoint, "examples": len(examples)}
  for split, c in counts.items():
    n, k = len(c["right"]), int(sum(c["right"]))
    out[split] = {
      "n": n,
      "verdict_right": round(k / n, 4),
      "verdict_right_ci95": [round(x, 4) for x in stats.wilson_interval(k, n)],
      "said_yes": round(float(np.mean(c["said_yes"])), 4),
      "trace_read_exactly": round(float(np.mean(c["trace_right"])), 4),
    }
  print(json.dumps(out))


if __name__ == "__main__":
  main()
