"""The tiny CPU model set up to read the map: compact renders, a frozen vision tower, a long warm start, RL.

  python -m vrrl_jax.train --config configs/frozenlake_small_cpu.py --workdir runs/small

Same model as ``frozenlake_tiny_cpu.py``, three changes measured in BENCHMARKS.md ("Small CPU run"):

- ``data.*_style="compact"``: 28 px per cell, so each image token is exactly one cell (no resize; feedback margins
  add whole cells); the image budget grows to 9 x 9 tokens (a 7 x 7 map with off-grid margins).
- ``optimizer.frozen=("visual",)``: trained from scratch, the vision tower collapses within a few dozen steps to a
  near-constant output (image tokens 100x larger than text embeddings, per-token variation < 1%), after which no
  map-dependent signal reaches the decoder. Frozen at its random init, it stays a random projection of each cell
  that the decoder can learn to read (``bench/perception_probe.py``: "where is the red square" stays at chance
  with the tower trained and leaves it with the tower frozen).
- 1,500 SFT steps at lr 1e-3 and 40 RL steps of 8 prompts x 8 samples.

Measured (54.5 min):
- After SFT, first routes follow the map: greedy strict success is 0.225 of evaluation maps, against 0.062 without
  these changes.
- During RL the sampled training reward rises 0.125 -> 0.167 (p = 0.045).
- Greedy optimal_rate goes 0.025 -> 0.05, only 2 maps of 80: the task itself is not yet learned measurably.
- Reading the map is not reproducible: a run that differed only in ``sft.wrong_route_loss=False`` gave one route per
  grid size after the same 1,500 SFT steps (BENCHMARKS.md, fifth session).
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location("frozenlake_tiny_cpu", pathlib.Path(__file__).with_name("frozenlake_tiny_cpu.py"))
frozenlake_tiny_cpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(frozenlake_tiny_cpu)


def get_config():
  c = frozenlake_tiny_cpu.get_config()
  c.data.train_style = "compact"
  c.data.eval_style = "compact"
  c.image.max_pixels = (9 * 28) ** 2
  c.optimizer.frozen = ("visual",)
  c.sft.steps = 1500
  c.sft.learning_rate = 1e-3
  c.rl.steps = 40
  c.rl.samples_per_prompt = 8  # more samples per question: more groups with a reward spread survive filtering
  c.rl.update_min_rows = 16
  c.rl.update_min_patches = 8192
  c.checkpoint.every = 20
  return c
