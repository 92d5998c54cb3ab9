"""The released VRRL recipe on Qwen3-VL-4B (upstream `train_frozenlake_vrrl_qwen3_vl_4b_4gpu.sh`), on accelerators:
the method settings of `frozenlake_qwen25vl_3b.py`, the model from the 4B checkpoint.

  python -m vrrl_jax.convert hf-to-orbax --hf-dir /path/Qwen3-VL-4B-Instruct --out /path/qwen3vl4b_orbax
  python -m vrrl_jax.train --config configs/frozenlake_qwen3vl_4b.py \
      --config.init_checkpoint=/path/qwen3vl4b_orbax --workdir gs://BUCKET/runs/vrrl_qwen3_4b

``model`` is the 4B config.json's shape (QWEN_VL_NOTES 5.2): the run checks that init_checkpoint holds exactly this
model and stops at startup, naming the fields, if it does not.
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
  "frozenlake_qwen25vl_3b", pathlib.Path(__file__).with_name("frozenlake_qwen25vl_3b.py")
)
frozenlake_qwen25vl_3b = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(frozenlake_qwen25vl_3b)


def get_config():
  c = frozenlake_qwen25vl_3b.get_config()
  c.model = dict(
    model_type="qwen3_vl",
    text_config=dict(
      vocab_size=151936,
      hidden_size=2560,
      intermediate_size=9728,
      num_hidden_layers=36,
      num_attention_heads=32,
      num_key_value_heads=8,
      head_dim=128,
      rms_norm_eps=1e-6,
      max_position_embeddings=262144,
      hidden_act="silu",
      attention_bias=False,
      rope_parameters=dict(
        rope_type="default", rope_theta=5000000.0, mrope_section=(24, 20, 20), mrope_interleaved=True
      ),
    ),
    vision_config=dict(
      depth=24,
      hidden_size=1024,
      intermediate_size=4096,
      num_heads=16,
      out_hidden_size=2560,
      hidden_act="gelu_pytorch_tanh",
      in_channels=3,
      patch_size=16,
      temporal_patch_size=2,
      spatial_merge_size=2,
      num_position_embeddings=2304,
      deepstack_visual_indexes=(5, 11, 17),
    ),
    image_token_id=151655,
    video_token_id=151656,
    vision_start_token_id=151652,
    vision_end_token_id=151653,
    tie_word_embeddings=True,
  )
  c.image = dict(min_pixels=65536, max_pixels=16777216)  # the Qwen3-VL hub preprocessor defaults
  return c
