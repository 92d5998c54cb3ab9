"""The tiny CPU run with a longer warm start and RL phase (about half an hour on 2 cores).

  python -m vrrl_jax.train --config configs/frozenlake_small_cpu.py --workdir runs/small

Same model as ``frozenlake_tiny_cpu.py``. Its 150 SFT steps do not teach the model to repeat its route inside
``<FINAL>``, so almost no sampled episode passes the format gate and RL has next to no reward to work with; after
800 steps the greedy episodes pass it every time. What was measured with this config (reward and optimal_rate
before and after RL) is in BENCHMARKS.md; a from-scratch model this size does not learn to read the map in this
budget, so its optimal_rate is not expected to move.
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
