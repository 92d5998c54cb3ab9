"""Perception pretraining of the tiny model (the main job's architecture) on FrozenLake maps and feedback images.

  python -m vrrl_jax.pretrain --config configs/pretrain_tiny.py --workdir runs/pretrain

One image token per cell (compact renders, 28 px per cell), warmup, and the vision tower at 0.1 x the lr: at the
full lr its tokens collapse to a near-constant (BENCHMARKS.md, "Why the model did not read the map"). rope_theta
100 instead of 1e4: with mrope_section (4, 6, 6) on a 32-wide head the width axis gets only the lowest rotary
frequencies, about 3e-3 to 2e-4 rad per position at 1e4 (0.06 to 0.01 at 100), so a row's cells barely differ in
position; at 100 the map captions reach 0.992 per cell at 800 steps (BENCHMARKS.md, "Perception pretraining").
"""

import importlib.util
import pathlib

import ml_collections

_spec = importlib.util.spec_from_file_location(
  "frozenlake_tiny_cpu", pathlib.Path(__file__).with_name("frozenlake_tiny_cpu.py")
)
frozenlake_tiny_cpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(frozenlake_tiny_cpu)


def get_config():
  tiny = frozenlake_tiny_cpu.get_config()
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.init_checkpoint = ml_collections.config_dict.placeholder(str)
  c.tokenizer_dir = ml_collections.config_dict.placeholder(str)
  c.data_dir = ml_collections.config_dict.placeholder(str)  # unset: the release's maps shipped in the package
  c.model = tiny.model  # rope_theta 100 (below)
  c.model_options = tiny.model_options
  c.image = dict(min_pixels=56 * 56, max_pixels=(9 * 28) ** 2)  # up to 9 x 9 tokens: a 7 x 7 map with margins
  c.mesh = tiny.mesh
  c.optimizer = tiny.optimizer
  c.optimizer.frozen = ()  # the main job freezes the pretrained tower; here it learns, at 0.1 x the lr
  c.optimizer.warmup_steps = 100
  c.optimizer.lr_scale = dict(visual=0.1)
  c.pretrain = dict(
    steps=2000,
    batch_size=16,
    micro_batches=1,
    learning_rate=1e-3,
    levels=(3, 4, 5, 6),
    style="compact",
    task_weights=dict(map=0.5, route=0.5),
    eval_every=100,
    eval_maps_per_level=16,
    eval_batch_size=32,
    gallery_examples=48,
    min_length=192,
    min_patches=4096,
    cosine_decay=True,
  )  # at a constant lr, held-out whole-map accuracy swung 0.77-1.0 between evals
  c.checkpoint = dict(every=100, keep=2)
  c.log = dict(
    console_keys=(
      "pretrain/loss",
      "heldout/map/cell",
      "heldout/map/exact",
      "heldout/map/elf",
      "heldout/route/trace",
      "time/step",
    )
  )
  return c
