"""GRPO baseline for the tiny CPU run: identical to the VRRL config except the rollout-mode weights (normal mode
only: no RandomTurnMasking, no buffered roll-ins), so the paper's comparison is one flag:
  --config.rl.mode_weights.normal=1 --config.rl.mode_weights.random_start=0 --config.rl.mode_weights.prefix_buffer=0
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
  "frozenlake_tiny_cpu", pathlib.Path(__file__).with_name("frozenlake_tiny_cpu.py")
)
frozenlake_tiny_cpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(frozenlake_tiny_cpu)


def get_config():
  c = frozenlake_tiny_cpu.get_config()
  c.rl.mode_weights = dict(normal=1.0, random_start=0.0, prefix_buffer=0.0)
  return c
