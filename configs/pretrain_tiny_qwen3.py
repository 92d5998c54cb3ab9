"""Perception pretraining of a tiny Qwen3-VL (the same sizes as ``pretrain_tiny.py``'s Qwen2.5-VL): its vision tower
adds a learned absolute position table, so an image token carries where it is, and its decoder interleaves the
T/H/W rotary axes over all frequencies.

  python -m vrrl_jax.pretrain --config configs/pretrain_tiny_qwen3.py --workdir runs/pretrain_qwen3

Renders are "compact32" (32 px per cell: one Qwen3-VL merged token of 2 x 2 patches of 16 px per cell).
"""

import importlib.util
import pathlib

import ml_collections

_spec = importlib.util.spec_from_file_location("pretrain_tiny", pathlib.Path(__file__).with_name("pretrain_tiny.py"))
pretrain_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pretrain_tiny)


def get_config():
  c = pretrain_tiny.get_config()
  c.model = dict(
    model_type="qwen3_vl",
    text_config=dict(
      vocab_size=ml_collections.config_dict.placeholder(int),
      hidden_size=128,
      intermediate_size=384,
      num_hidden_layers=4,
      num_attention_heads=4,
      num_key_value_heads=2,
      head_dim=32,
      rms_norm_eps=1e-6,
      max_position_embeddings=4096,
      hidden_act="silu",
      rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=(6, 5, 5)),
    ),
    vision_config=dict(
      depth=2,
      hidden_size=64,
      intermediate_size=128,
      num_heads=2,
      hidden_act="gelu_pytorch_tanh",
      in_channels=3,
      patch_size=16,
      temporal_patch_size=2,
      spatial_merge_size=2,
      out_hidden_size=128,
      num_position_embeddings=18 * 18,
      deepstack_visual_indexes=(0,),
    ),
    tie_word_embeddings=True,
  )
  c.image = dict(min_pixels=64 * 64, max_pixels=(9 * 32) ** 2)  # up to 9 x 9 tokens: a 7 x 7 map with margins
  c.pretrain.style = "compact32"
  return c
