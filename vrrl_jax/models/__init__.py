"""Qwen2.5-VL in Flax Linen."""

from vrrl_jax.models.config import Qwen25VLConfig, TextConfig, VisionConfig
from vrrl_jax.models.kv_cache import KVCache
from vrrl_jax.models.qwen2_5_vl import (ModelInputs, ModelOutput, Qwen25VL, abstract_params, init_cache,
                                        init_params, prepare_inputs)
from vrrl_jax.models.rope import get_rope_index
from vrrl_jax.models.vision import VisionInputs, prepare_vision_inputs


def __getattr__(name):
  if name == "from_pretrained":  # lazy: checkpoints.pretrained imports this package
    from vrrl_jax.checkpoints.pretrained import from_pretrained
    return from_pretrained
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
