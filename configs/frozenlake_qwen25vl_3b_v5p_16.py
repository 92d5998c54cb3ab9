"""The released VRRL recipe on Qwen2.5-VL-3B (``frozenlake_qwen25vl_3b.py``) on a v5p-16 (8 chips, 95 GiB HBM each,
2 hosts): the released batch (32 prompts x 8 samples), 8192-token rows and KL term, with images shrunk to fit.

  python -m vrrl_jax.plan --config configs/frozenlake_qwen25vl_3b_v5p_16.py --topology v5p-16
  python -m vrrl_jax.launch run --run vrrl3b --config configs/frozenlake_qwen25vl_3b_v5p_16.py \\
      -- --config.init_checkpoint=gs://BUCKET/models/qwen25vl3b_orbax

Planner verdict (worst case: every row max_sequence_len tokens, at most half of them image tokens), per device:
  released as shipped (32 prompts x 8 samples, 8192 tokens, hub max_pixels): 26253.9 GiB (update) of 85.5 GiB
  released batch with whole images (max_pixels 896^2) on this mesh: 142.1 GiB (update): does not fit
  this config: 71.7 GiB (update) of 85.5 GiB: fits; an RL step takes at least 83 s (roofline)

Why. The vision tower's inputs are replicated (every device encodes a whole micro-batch's patches) and its frame
attention is a dense band of 3 x max_frame_patches keys per patch, with max_frame_patches = max_pixels / 14^2: the
hub's max_pixels (12.8 M) makes that 3 x 65536 keys. Capping images at 560 px a side (the 784 px renders shrunk to 80
px per cell, 400 tokens) is the largest size at which the released batch fits. Mesh fsdp=4 x tensor=2 (tensor splits
heads and the vision attention; the 3B's 2 KV heads allow at most 2), 64 micro-batches of 4 rows (one per device),
one vision prefill call at most 16384 patches.
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
  c.mesh = dict(data=1, fsdp=4, tensor=2)
  c.image.max_pixels = 560 * 560
  c.rl.micro_batches = 64  # 256 rows: 4 per micro-batch
  c.sampler = dict(max_prefill_patches=16384)
  return c
