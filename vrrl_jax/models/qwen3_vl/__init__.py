"""Qwen3-VL (dense) in Flax Linen: a model family picked by config.json's ``model_type: qwen3_vl``."""

from vrrl_jax.models.qwen3_vl.config import Qwen3VLConfig, TextConfig, VisionConfig
from vrrl_jax.models.qwen3_vl.model import Qwen3VL, abstract_params, init_cache, init_params, prepare_inputs
from vrrl_jax.models.qwen3_vl.vision import VisionInputs, prepare_vision_inputs

Config, Model = Qwen3VLConfig, Qwen3VL  # the family surface (vrrl_jax.models.families)

__all__ = [
  "Config",
  "Model",
  "Qwen3VLConfig",
  "TextConfig",
  "VisionConfig",
  "Qwen3VL",
  "abstract_params",
  "init_cache",
  "init_params",
  "prepare_inputs",
  "VisionInputs",
  "prepare_vision_inputs",
]
