"""The released VRRL recipe on Qwen3-VL-4B (``frozenlake_qwen3vl_4b.py``) on a v5p-16 (8 chips, 95 GiB HBM each, 2
hosts): the released batch (32 prompts x 8 samples), 8192-token rows and KL term, with images shrunk to fit.

  python -m vrrl_jax.plan --config configs/frozenlake_qwen3vl_4b_v5p_16.py --topology v5p-16
  python -m vrrl_jax.launch run --run vrrl4b --config configs/frozenlake_qwen3vl_4b_v5p_16.py \\
      -- --config.init_checkpoint=gs://BUCKET/models/qwen3vl4b_orbax

Planner verdict (worst case: every row max_sequence_len tokens, at most half of them image tokens), per device:
  released as shipped (32 prompts x 8 samples, 8192 tokens, hub max_pixels): 26221.3 GiB (update) of 85.5 GiB
  released batch with whole images (max_pixels 896^2) on this mesh: 132.7 GiB (rollout): does not fit
  this config: 84.8 GiB (rollout) of 85.5 GiB: fits; an RL step takes at least 105 s (roofline)

Why. The vision tower's inputs are replicated (every device encodes a whole micro-batch's patches, and the update
batch holds every micro-batch's pixels on every device) and each of its 24 blocks attends over a dense band of 3 x
max_frame_patches keys per patch (max_pixels / 16^2: 3 x 65536 with the hub's max_pixels). At the released batch,
images fit at 256 px a side (the 784 px renders shrunk to 8 x 8 tokens, about one per cell), and only just. The
alternative the planner also accepts keeps the images whole (max_pixels 896^2: no render is shrunk) at half the
prompts: --config.rl.prompts_per_step=16 --config.rl.micro_batches=128 --config.mesh.fsdp=1
--config.mesh.tensor=8 --config.image.max_pixels=802816 --config.eval.batch_size=128 (71.9 GiB). Mesh here fsdp=4 x
tensor=2, 64 micro-batches of 4 rows (one per device), one vision prefill call at most 16384 patches.
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
  c.mesh = dict(data=1, fsdp=4, tensor=2)
  c.image.max_pixels = 256 * 256
  c.rl.micro_batches = 64  # 256 rows: 4 per micro-batch
  c.sampler = dict(max_prefill_patches=16384)
  return c
