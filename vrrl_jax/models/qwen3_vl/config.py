"""Qwen3-VL configuration: a frozen dataclass built from a Hugging Face config.json dict or config object.

Missing optional fields take the transformers class defaults (`Qwen3VLConfig` and its text/vision configs), so a
config.json means the same model here as in transformers. Sizes and the vocabulary are required. Dense models only:
the MoE variants (`qwen3_vl_moe`) are refused by name.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import jax

from vrrl_jax.models import config as base_config


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """The vision tower (`Qwen3VLVisionModel`)."""

  depth: int
  hidden_size: int
  intermediate_size: int
  num_heads: int
  out_hidden_size: int
  patch_size: int = 16
  temporal_patch_size: int = 2
  spatial_merge_size: int = 2
  in_channels: int = 3
  num_position_embeddings: int = 2304
  deepstack_visual_indexes: tuple[int, ...] = (8, 16, 24)
  rope_theta: float = 10000.0

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def patch_dim(self) -> int:
    """Length of one pixel_values row: C * T * P * P."""
    return self.in_channels * self.temporal_patch_size * self.patch_size**2

  @property
  def merge_unit(self) -> int:
    return self.spatial_merge_size**2

  @property
  def position_side(self) -> int:
    """Side of the square learned position table."""
    return math.isqrt(self.num_position_embeddings)


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """The Qwen3 decoder (`Qwen3VLTextModel`): explicit head_dim, q/k RMSNorm, no biases, interleaved M-RoPE."""

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_hidden_layers: int
  num_attention_heads: int
  num_key_value_heads: int
  head_dim: int = 128
  rms_norm_eps: float = 1e-6
  rope_theta: float = 500000.0
  mrope_section: tuple[int, int, int] = (24, 20, 20)
  max_position_embeddings: int = 128000


@dataclasses.dataclass(frozen=True)
class Qwen3VLConfig:
  """Model structure plus run options (dtypes, remat, scan, attention kernel)."""

  model_type: ClassVar[str] = "qwen3_vl"

  text: TextConfig
  vision: VisionConfig
  image_token_id: int = 151655
  video_token_id: int = 151656
  vision_start_token_id: int = 151652
  vision_end_token_id: int = 151653
  tie_word_embeddings: bool = False
  # Run options; not part of config.json.
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat_policy: str | None = None
  scan_layers: bool = False
  attention_impl: str = "xla"
  precision: str = "default"
  max_frame_patches: int | None = None  # as Qwen25VLConfig: bounds full attention to a band of frame chunks

  def __post_init__(self):
    validate(self)

  @property
  def compute_dtype(self):
    return base_config.DTYPES[self.dtype]

  @property
  def weight_dtype(self):
    return base_config.DTYPES[self.param_dtype]

  @property
  def matmul_precision(self) -> jax.lax.Precision:
    return {"default": jax.lax.Precision.DEFAULT, "high": jax.lax.Precision.HIGH, "highest": jax.lax.Precision.HIGHEST}[
      self.precision
    ]

  @property
  def remat_policy_fn(self):
    return getattr(jax.checkpoint_policies, self.remat_policy)

  def to_hf(self) -> dict:
    """config.json (transformers 5 `save_pretrained` format)."""
    text, vision = self.text, self.vision
    return {
      "architectures": ["Qwen3VLForConditionalGeneration"],
      "model_type": "qwen3_vl",
      "dtype": self.param_dtype,
      "image_token_id": self.image_token_id,
      "video_token_id": self.video_token_id,
      "vision_start_token_id": self.vision_start_token_id,
      "vision_end_token_id": self.vision_end_token_id,
      "tie_word_embeddings": self.tie_word_embeddings,
      "text_config": {
        "model_type": "qwen3_vl_text",
        "vocab_size": text.vocab_size,
        "hidden_size": text.hidden_size,
        "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads,
        "head_dim": text.head_dim,
        "hidden_act": "silu",
        "attention_bias": False,
        "rms_norm_eps": text.rms_norm_eps,
        "max_position_embeddings": text.max_position_embeddings,
        "rope_parameters": {
          "rope_type": "default",
          "rope_theta": text.rope_theta,
          "mrope_section": list(text.mrope_section),
          "mrope_interleaved": True,
        },
        "tie_word_embeddings": self.tie_word_embeddings,
      },
      "vision_config": {
        "model_type": "qwen3_vl_vision",
        "depth": vision.depth,
        "hidden_size": vision.hidden_size,
        "intermediate_size": vision.intermediate_size,
        "num_heads": vision.num_heads,
        "out_hidden_size": vision.out_hidden_size,
        "hidden_act": "gelu_pytorch_tanh",
        "in_channels": vision.in_channels,
        "patch_size": vision.patch_size,
        "temporal_patch_size": vision.temporal_patch_size,
        "spatial_merge_size": vision.spatial_merge_size,
        "num_position_embeddings": vision.num_position_embeddings,
        "deepstack_visual_indexes": list(vision.deepstack_visual_indexes),
        "rope_parameters": {"rope_type": "axial", "rope_theta": vision.rope_theta},
      },
    }

  @classmethod
  def from_hf(cls, hf_config: Any, **options) -> Qwen3VLConfig:
    """From a config.json dict or a transformers `Qwen3VLConfig`; `options` set the run options."""
    if isinstance(hf_config, Mapping):
      raw = dict(hf_config)
    elif hasattr(hf_config, "to_dict"):
      raw = hf_config.to_dict()
    else:
      raise TypeError(f"expected a config dict or a transformers config, got {type(hf_config).__name__}")
    return cls(**_parse_top(raw), **options)


def validate(config: Qwen3VLConfig) -> None:
  """Raises ValueError naming the first inconsistent field."""
  text, vision = config.text, config.vision
  base_config.check_sizes(config, _check)
  _check(
    text.num_attention_heads % text.num_key_value_heads == 0,
    f"num_attention_heads {text.num_attention_heads} not divisible by num_key_value_heads {text.num_key_value_heads}",
  )
  _check(text.head_dim % 2 == 0, f"text head_dim {text.head_dim} must be even")
  _check(len(text.mrope_section) == 3, f"mrope_section must have 3 entries (T, H, W), got {text.mrope_section}")
  _check(
    vision.hidden_size % vision.num_heads == 0,
    f"vision hidden_size {vision.hidden_size} not divisible by num_heads {vision.num_heads}",
  )
  _check(vision.head_dim % 4 == 0, f"vision head_dim {vision.head_dim} must be divisible by 4 (2D axial rotary)")
  _check(
    vision.position_side**2 == vision.num_position_embeddings,
    f"num_position_embeddings {vision.num_position_embeddings} must be a square (a side x side table)",
  )
  _check(
    vision.out_hidden_size == text.hidden_size,
    f"vision out_hidden_size {vision.out_hidden_size} must equal text hidden_size {text.hidden_size}",
  )
  _check(
    all(0 <= i < vision.depth for i in vision.deepstack_visual_indexes),
    f"deepstack_visual_indexes {vision.deepstack_visual_indexes} out of range for depth {vision.depth}",
  )
  _check(
    len(set(vision.deepstack_visual_indexes)) == len(vision.deepstack_visual_indexes),
    f"deepstack_visual_indexes {vision.deepstack_visual_indexes} repeat a block",
  )
  _check(
    len(vision.deepstack_visual_indexes) <= text.num_hidden_layers,
    f"{len(vision.deepstack_visual_indexes)} DeepStack features but only {text.num_hidden_layers} decoder layers",
  )
  base_config.check_tokens_and_run_options(config, _check)


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(f"invalid Qwen3-VL config: {message}")


def _require(raw: dict, key: str, where: str):
  if raw.get(key) is None:
    raise ValueError(f"{where} config is missing required field {key!r}")
  return raw[key]


def _parse_top(raw: dict) -> dict:
  model_type = raw.get("model_type", "qwen3_vl")
  if model_type == "qwen3_vl_moe":
    raise ValueError("Qwen3-VL MoE checkpoints (model_type 'qwen3_vl_moe') are not supported: dense Qwen3-VL only")
  if model_type != "qwen3_vl":
    raise ValueError(f"not a Qwen3-VL config: model_type={model_type!r}")
  for part in ("text_config", "vision_config"):
    if raw.get(part) is None:
      raise ValueError(f"config has no {part}")
  text_raw = dict(raw["text_config"])
  tie = bool(raw.get("tie_word_embeddings", False)) or bool(text_raw.get("tie_word_embeddings", False))
  out = dict(text=_parse_text(text_raw), vision=_parse_vision(dict(raw["vision_config"])), tie_word_embeddings=tie)
  for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
    if raw.get(name) is not None:
      out[name] = int(raw[name])
  return out


def _parse_text(raw: dict) -> TextConfig:
  if raw.get("model_type", "qwen3_vl_text") != "qwen3_vl_text":
    raise ValueError(f"not a Qwen3-VL text config: model_type={raw['model_type']!r}")
  if raw.get("hidden_act", "silu") != "silu":
    raise ValueError(f"text hidden_act must be 'silu', got {raw['hidden_act']!r}")
  if raw.get("attention_bias"):
    raise ValueError("attention_bias=True is not supported (no Qwen3-VL checkpoint uses it)")
  if "num_experts" in raw:
    raise ValueError("Qwen3-VL MoE text configs (num_experts) are not supported: dense Qwen3-VL only")
  rope = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type not in ("default", "mrope"):
    raise ValueError(f"unsupported text rope_type {rope_type!r} (only default/mrope)")
  heads = int(_require(raw, "num_attention_heads", "text"))
  kv_heads = raw.get("num_key_value_heads")
  return TextConfig(
    vocab_size=int(_require(raw, "vocab_size", "text")),
    hidden_size=int(_require(raw, "hidden_size", "text")),
    intermediate_size=int(_require(raw, "intermediate_size", "text")),
    num_hidden_layers=int(_require(raw, "num_hidden_layers", "text")),
    num_attention_heads=heads,
    num_key_value_heads=int(heads if kv_heads is None else kv_heads),
    head_dim=int(raw.get("head_dim") or 128),
    rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
    rope_theta=float(rope.get("rope_theta", raw.get("rope_theta", 500000.0))),
    mrope_section=tuple(int(s) for s in rope.get("mrope_section") or (24, 20, 20)),
    max_position_embeddings=int(raw.get("max_position_embeddings", 128000)),
  )


def _parse_vision(raw: dict) -> VisionConfig:
  if raw.get("model_type", "qwen3_vl_vision") not in ("qwen3_vl_vision", "qwen3_vl"):  # old checkpoints: "qwen3_vl"
    raise ValueError(f"not a Qwen3-VL vision config: model_type={raw['model_type']!r}")
  if raw.get("hidden_act", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
    raise ValueError(f"vision hidden_act must be 'gelu_pytorch_tanh', got {raw['hidden_act']!r}")
  for alias, name in {"num_attention_heads": "num_heads", "num_hidden_layers": "depth"}.items():
    if alias in raw and name not in raw:
      raw[name] = raw[alias]
  rope = dict(raw.get("rope_parameters") or {})
  if rope.get("rope_type", "axial") != "axial":
    raise ValueError(f"vision rope_type must be 'axial', got {rope['rope_type']!r}")
  for name in ("patch_size", "temporal_patch_size"):
    if isinstance(raw.get(name), (list, tuple)):
      sizes = set(raw[name])
      if len(sizes) != 1:
        raise ValueError(f"vision {name}={raw[name]}: only equal sizes are supported")
      raw[name] = sizes.pop()
  optional = {
    name: int(raw[name])
    for name in ("patch_size", "temporal_patch_size", "spatial_merge_size", "in_channels", "num_position_embeddings")
    if raw.get(name) is not None
  }
  if raw.get("deepstack_visual_indexes") is not None:
    optional["deepstack_visual_indexes"] = tuple(int(i) for i in raw["deepstack_visual_indexes"])
  return VisionConfig(
    depth=int(_require(raw, "depth", "vision")),
    hidden_size=int(_require(raw, "hidden_size", "vision")),
    intermediate_size=int(_require(raw, "intermediate_size", "vision")),
    num_heads=int(_require(raw, "num_heads", "vision")),
    out_hidden_size=int(_require(raw, "out_hidden_size", "vision")),
    rope_theta=float(rope.get("rope_theta", 10000.0)),
    **optional,
  )
