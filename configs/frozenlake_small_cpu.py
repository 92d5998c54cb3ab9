"""The tiny CPU model with a longer warm start and RL phase: 37 minutes on 2 cores (measured, BENCHMARKS.md).

  python -m vrrl_jax.train --config configs/frozenlake_small_cpu.py --workdir runs/small

Same model as ``frozenlake_tiny_cpu.py``. Its 150 SFT steps do not teach the model to repeat its route inside
``<FINAL>``, so almost no sampled episode passes the format gate and RL gets next to no reward; after 800 steps
some do, and over 40 RL steps the sampled training reward rises measurably (0.055 -> 0.077, first vs last 10
steps; format and reflection terms). It does not learn to read the map: greedy eval optimal_rate stays at 0.0125
and every map gets the same first route. A replication needs a model that reads the image (a converted
checkpoint, or far more SFT than a CPU budget allows).
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location("frozenlake_tiny_cpu", pathlib.Path(__file__).with_name("frozenlake_tiny_cpu.py"))
frozenlake_tiny_cpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(frozenlake_tiny_cpu)


def get_config():
  c = frozenlake_tiny_cpu.get_config()
  c.sft.steps = 800
  c.rl.steps = 40
  c.rl.samples_per_prompt = 8  # more samples per question: more groups with a reward spread survive filtering
  c.rl.update_min_rows = 16
  c.rl.update_min_patches = 8192
  c.checkpoint.every = 20
  return c
