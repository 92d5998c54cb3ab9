"""The released VRRL recipe on Qwen2.5-VL-3B (``frozenlake_qwen25vl_3b.py``) on a v4-8 (4 chips, 32 GiB HBM each,
one host), at the nearest setting the planner accepts: the released one does not fit.

  python -m vrrl_jax.plan --config configs/frozenlake_qwen25vl_3b_v4_8.py --topology v4-8
  python -m vrrl_jax.launch run --run vrrl3b_v4 --config configs/frozenlake_qwen25vl_3b_v4_8.py \\
      -- --config.init_checkpoint=gs://BUCKET/models/qwen25vl3b_orbax

Planner verdict (worst case: every row max_sequence_len tokens, at most half of them image tokens), per device:
  released as shipped (32 prompts x 8 samples, 8192 tokens, hub max_pixels): 26270.1 GiB (update) of 28.8 GiB
  released batch with whole images (max_pixels 896^2) on this mesh: 132.2 GiB (rollout): does not fit
  this config: 28.3 GiB (update) of 28.8 GiB: fits; an RL step takes at least 44 s (roofline)

Why. Four devices hold the float32 train state (policy, reference, AdamW moments: 14 GiB each) and float32 gradients
(7 GiB), leaving under 8 GiB of the 28.8 GiB limit for a micro-batch, the replicated images of the whole update
batch and the rollout's cache. Kept: the KL term and 8 samples per prompt. Changed, in the order the planner
needed: images at most 336 px a side (the 784 px renders shrunk to 48 px per cell, 144 tokens), max_sequence_len
6144, 8 prompts per step. Mesh fsdp=2 x tensor=2, one row per device per micro-batch. For the released batch use
``frozenlake_qwen25vl_3b_v5p_16.py``.
"""

import importlib.util
import pathlib


def _load(name):
  spec = importlib.util.spec_from_file_location(name, pathlib.Path(__file__).with_name(f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


frozenlake_qwen25vl_3b = _load("frozenlake_qwen25vl_3b")
frozenlake_qwen25vl_3b_v5e_8 = _load("frozenlake_qwen25vl_3b_v5e_8")  # the 3B model's shape


def get_config():
  c = frozenlake_qwen25vl_3b.get_config()
  c.model = frozenlake_qwen25vl_3b_v5e_8.QWEN25VL_3B
  c.mesh = dict(data=1, fsdp=2, tensor=2)
  c.image.max_pixels = 336 * 336
  c.max_sequence_len = 6144
  c.rl.update(prompts_per_step=8, micro_batches=32)  # 64 rows: 2 per micro-batch
  c.rl.buffer.min_size = 8
  c.sampler = dict(max_prefill_patches=8192)
  c.eval.batch_size = 64
  return c
