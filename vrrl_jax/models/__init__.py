"""Vision-language models in Flax Linen. A family per config.json ``model_type`` (``vrrl_jax.models.families``):
Qwen2.5-VL (``qwen2_5_vl``, also re-exported here) and Qwen3-VL (``qwen3_vl``)."""

from vrrl_jax.models.config import Qwen25VLConfig, TextConfig, VisionConfig
from vrrl_jax.models.inputs import ModelInputs, ModelOutput
from vrrl_jax.models.kv_cache import KVCache
from vrrl_jax.models.qwen2_5_vl import Qwen25VL, abstract_params, init_cache, init_params, prepare_inputs
from vrrl_jax.models.rope import get_rope_index
from vrrl_jax.models.vision import VisionInputs, prepare_vision_inputs

__all__ = [
  "Qwen25VLConfig",
  "TextConfig",
  "VisionConfig",
  "ModelInputs",
  "ModelOutput",
  "KVCache",
  "Qwen25VL",
  "abstract_params",
  "init_cache",
  "init_params",
  "prepare_inputs",
  "get_rope_index",
  "VisionInputs",
  "prepare_vision_inputs",
  "from_pretrained",
]


def __getattr__(name):
  if name == "from_pretrained":  # lazy: checkpoints.pretrained imports this package
    from vrrl_jax.checkpoints.pretrained import from_pretrained

    return from_pretrained
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
