r"""Greedy eval of every saved step of one training run: how the eval metrics move with training steps.

  python bench/checkpoint_curve.py --config configs/frozenlake_small_cpu.py --workdir runs/curve \
      [--steps 500,1000,1500] [--config.eval.maps_per_level=16 ...]

Runs the config's eval (the task's eval examples, greedy) on each training checkpoint of ``workdir`` in one process
(one sampler, so its programs compile once), writes ``workdir/curve/step_<N>/{metrics.json,gallery.html}`` and
prints one JSON line: per step, the task's headline numbers. ``--config.x=y`` overrides apply to the eval (they
must not change the model).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

from vrrl_jax import eval as eval_lib
from vrrl_jax import experiment, rl_loop, run_config, run_state
from vrrl_jax.checkpoints.train_checkpoint import TrainCheckpointer


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--steps", default="", help="comma-separated steps (default: every saved step)")
  args, overrides = parser.parse_known_args(argv)
  experiment.setup_console()
  experiment.enable_compilation_cache()
  config = experiment.load_config(args.config, overrides)
  run_config.validate(config)
  exp = experiment.build(config)
  params, specs = experiment.initial_params(exp, int(config.seed))
  workdir = pathlib.Path(args.workdir)
  ckpt = TrainCheckpointer(workdir / "checkpoints", save_every=1, keep=1000)
  steps = [int(s) for s in args.steps.split(",") if s] or ckpt.steps()
  sampler = experiment.make_sampler(exp, run_config.sampler_buckets(config))
  out = {"config": args.config, "workdir": str(workdir), "steps": {}}
  for step in steps:
    t0 = time.perf_counter()
    progress, state = run_state.resume(
      ckpt, exp, config, params, specs, rl_loop.make_buffer(exp.task, config), step=step
    )
    metrics = eval_lib.evaluate(exp, config, state.params, workdir / "curve" / f"step_{step}", sampler=sampler)
    out["steps"][step] = {
      "phase": progress.phase,
      **eval_lib.headline(exp.task, metrics),
      "eval_seconds": round(time.perf_counter() - t0, 1),
    }
  ckpt.close()
  print(json.dumps(out))


if __name__ == "__main__":
  main()
