"""The released VRRL recipe on Qwen2.5-VL-3B (``frozenlake_qwen25vl_3b.py``) on a v5e-8 (8 chips, 16 GB HBM each,
one host), at the nearest setting the planner accepts: the released one does not fit.

  python -m vrrl_jax.plan --config configs/frozenlake_qwen25vl_3b_v5e_8.py --topology v5e-8
  python -m vrrl_jax.launch run --run vrrl3b_v5e --config configs/frozenlake_qwen25vl_3b_v5e_8.py \\
      -- --config.init_checkpoint=gs://BUCKET/models/qwen25vl3b_orbax

Planner verdict (worst case: every row max_sequence_len tokens, at most half of them image tokens), per device:
  released as shipped (32 prompts x 8 samples, 8192 tokens, hub max_pixels): 26253.9 GiB (update) of 13.4 GiB
  released batch with whole images (max_pixels 896^2) on this mesh: 142.1 GiB (update): does not fit
  this config: 12.7 GiB (update) of 13.4 GiB: fits; an RL step takes at least 27 s (roofline)

Why. The float32 train state alone (policy, reference, AdamW moments: 7.0 GiB) plus float32 gradients (3.5 GiB) leave
under 3 GiB of the 13.4 GiB limit. The released 8192-token rows need more than that for one row's attention
backward (the blocked attention keeps every tile's scores: 6.4 GB per row at 8 heads per device), and the hub's
max_pixels makes the vision tower attend over bands of 3 x 65536 patches. Changed, in the order the planner needed:
images at most 224 px a side (the 784 px renders shrunk: 32 px per cell, 64 tokens), max_sequence_len 4096, 8
prompts x 8 samples, and no KL term (kl_coef 0: no reference copy). Mesh fsdp=4 x tensor=2 (tensor splits heads and
the vision tower's attention; Qwen2.5-VL-3B's 2 KV heads allow at most 2), one row per device per micro-batch.
Float32 params stay: at lr 5e-7 a bfloat16 param would not register the updates. For the released batch use
``frozenlake_qwen25vl_3b_v5p_16.py``. To keep the released KL term (0.01) here, move its reference to host memory:
``--config.rl.loss.kl_coef=0.01 --config.rl.reference_memory=host`` (the planner: peak 12.74 GiB of the 13.41 GiB
limit per chip, against 14.49 GiB with the reference on the devices; not yet run on a TPU).

``model`` is the 3B config.json's shape (Qwen/Qwen2.5-VL-3B-Instruct): the planner needs it, and the run checks
that init_checkpoint holds exactly this model.
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
  "frozenlake_qwen25vl_3b", pathlib.Path(__file__).with_name("frozenlake_qwen25vl_3b.py")
)
frozenlake_qwen25vl_3b = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(frozenlake_qwen25vl_3b)

QWEN25VL_3B = dict(
  model_type="qwen2_5_vl",
  text_config=dict(
    vocab_size=151936,
    hidden_size=2048,
    intermediate_size=11008,
    num_hidden_layers=36,
    num_attention_heads=16,
    num_key_value_heads=2,
    rms_norm_eps=1e-6,
    max_position_embeddings=128000,
    hidden_act="silu",
    rope_parameters=dict(rope_type="default", rope_theta=1000000.0, mrope_section=(16, 24, 24)),
  ),
  vision_config=dict(
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    out_hidden_size=2048,
    hidden_act="silu",
    in_channels=3,
    patch_size=14,
    temporal_patch_size=2,
    spatial_merge_size=2,
    window_size=112,
    fullatt_block_indexes=(7, 15, 23, 31),
    tokens_per_second=2,
  ),
  image_token_id=151655,
  video_token_id=151656,
  vision_start_token_id=151652,
  vision_end_token_id=151653,
  tie_word_embeddings=True,
)


def get_config():
  c = frozenlake_qwen25vl_3b.get_config()
  c.model = QWEN25VL_3B
  c.mesh = dict(data=1, fsdp=4, tensor=2)
  c.image.max_pixels = 224 * 224
  c.max_sequence_len = 4096
  c.rl.update(prompts_per_step=8, samples_per_prompt=8, micro_batches=16)  # 64 rows: 4 per micro-batch
  c.rl.loss.kl_coef = 0.0
  c.rl.buffer.min_size = 8
  c.sampler = dict(max_prefill_patches=16384)  # vision tower inputs are replicated: bound one prefill call
  c.eval.batch_size = 64
  return c
