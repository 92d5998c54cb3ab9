"""The released VRRL recipe on Qwen3-VL-4B (``frozenlake_qwen3vl_4b.py``) on a v5e-8 (8 chips, 16 GB HBM each, one
host), at the nearest setting the planner accepts: a small-batch run, the released one does not fit.

  python -m vrrl_jax.plan --config configs/frozenlake_qwen3vl_4b_v5e_8.py --topology v5e-8
  python -m vrrl_jax.launch run --run vrrl4b_v5e --config configs/frozenlake_qwen3vl_4b_v5e_8.py \\
      -- --config.init_checkpoint=gs://BUCKET/models/qwen3vl4b_orbax

Planner verdict (worst case: every row max_sequence_len tokens, at most half of them image tokens), per device:
  released as shipped (32 prompts x 8 samples, 8192 tokens, hub max_pixels): 26221.3 GiB (update) of 13.4 GiB
  released batch with whole images (max_pixels 896^2) on this mesh: 132.5 GiB (rollout): does not fit
  this config: 12.9 GiB (update) of 13.4 GiB: fits; an RL step takes at least 14 s (roofline)

Why. The 4.4 B float32 params, AdamW moments and gradients take 10.4 GiB of each device's 13.4 GiB limit before any
activation. Changed, in the order the planner needed: no KL term (kl_coef 0: no reference copy), images at most
256 px a side (8 x 8 tokens), max_sequence_len 4096, 4 prompts x 8 samples. Mesh fsdp=1 x tensor=8 (Qwen3-VL-4B's 8
KV heads and 16 vision heads allow it; every device sees every row), 32 micro-batches of one row. For the released
batch use ``frozenlake_qwen3vl_4b_v5p_16.py``.
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
  "frozenlake_qwen3vl_4b", pathlib.Path(__file__).with_name("frozenlake_qwen3vl_4b.py")
)
frozenlake_qwen3vl_4b = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(frozenlake_qwen3vl_4b)


def get_config():
  c = frozenlake_qwen3vl_4b.get_config()
  c.mesh = dict(data=1, fsdp=1, tensor=8)
  c.image.max_pixels = 256 * 256
  c.max_sequence_len = 4096
  c.rl.update(prompts_per_step=4, samples_per_prompt=8, micro_batches=32)
  c.rl.loss.kl_coef = 0.0
  c.rl.buffer.min_size = 4
  c.sampler = dict(max_prefill_patches=16384)
  c.eval.batch_size = 32
  return c
