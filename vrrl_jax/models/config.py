"""Qwen2.5-VL configuration: a frozen dataclass built from a Hugging Face config.json dict or config object.

Missing optional fields take the transformers class defaults, so a config.json means the same model here as in
transformers. Fields whose defaults would silently change the model (sizes, vocab) are required.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
PRECISIONS = ("default", "high", "highest")
ATTENTION_IMPLS = ("xla",)


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """The vision tower (`Qwen2_5_VisionTransformerPretrainedModel`)."""

  depth: int
  hidden_size: int
  intermediate_size: int
  num_heads: int
  out_hidden_size: int
  patch_size: int = 14
  temporal_patch_size: int = 2
  spatial_merge_size: int = 2
  in_channels: int = 3
  window_size: int = 112
  fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
  tokens_per_second: int = 4
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
    """Patches merged into one LLM token."""
    return self.spatial_merge_size**2

  @property
  def window_merged(self) -> int:
    """Window side in merged tokens (transformers' `vit_merger_window_size`)."""
    return self.window_size // self.spatial_merge_size // self.patch_size


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """The Qwen2 decoder (`Qwen2_5_VLTextModel`) and its M-RoPE."""

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_hidden_layers: int
  num_attention_heads: int
  num_key_value_heads: int
  rms_norm_eps: float = 1e-5
  rope_theta: float = 1000000.0
  mrope_section: tuple[int, int, int] = (16, 24, 24)
  max_position_embeddings: int = 32768

  @property
  def head_dim(self) -> int:
    # transformers' Qwen2.5-VL attention uses hidden // heads and never reads config.head_dim.
    return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class Qwen25VLConfig:
  """Model structure plus run options (dtypes, remat, scan, attention kernel)."""

  model_type: ClassVar[str] = "qwen2_5_vl"

  text: TextConfig
  vision: VisionConfig
  image_token_id: int = 151655
  video_token_id: int = 151656
  vision_start_token_id: int = 151652
  vision_end_token_id: int = 151653
  tie_word_embeddings: bool = False
  # Run options; not part of config.json.
  dtype: str = "float32"  # activations / matmul inputs
  param_dtype: str = "float32"
  remat_policy: str | None = None  # None = no remat, else a name in jax.checkpoint_policies
  scan_layers: bool = False  # nn.scan over decoder layers and over vision blocks
  attention_impl: str = "xla"
  precision: str = "default"  # matmul precision; "highest" for fp32 parity on GPU/TPU
  # Most patches in one image frame, when the image processor bounds it (max_pixels / patch_size^2). Then the
  # vision tower's full-attention blocks attend within a band of 3 chunks of this size (cheap, and the program
  # does not grow with the number of images); inputs with a larger frame are refused. None: any frame size.
  max_frame_patches: int | None = None

  def __post_init__(self):
    validate(self)

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def weight_dtype(self):
    return DTYPES[self.param_dtype]

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
    config = self
    text, vision = config.text, config.vision
    return {
      "architectures": ["Qwen2_5_VLForConditionalGeneration"],
      "model_type": "qwen2_5_vl",
      "dtype": config.param_dtype,
      "image_token_id": config.image_token_id,
      "video_token_id": config.video_token_id,
      "vision_start_token_id": config.vision_start_token_id,
      "vision_end_token_id": config.vision_end_token_id,
      "tie_word_embeddings": config.tie_word_embeddings,
      "text_config": {
        "model_type": "qwen2_5_vl_text",
        "vocab_size": text.vocab_size,
        "hidden_size": text.hidden_size,
        "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads,
        "hidden_act": "silu",
        "rms_norm_eps": text.rms_norm_eps,
        "max_position_embeddings": text.max_position_embeddings,
        "rope_parameters": {
          "rope_type": "default",
          "rope_theta": text.rope_theta,
          "mrope_section": list(text.mrope_section),
        },
        "use_sliding_window": False,
      },
      "vision_config": {
        "model_type": "qwen2_5_vl_vision",
        "depth": vision.depth,
        "hidden_size": vision.hidden_size,
        "intermediate_size": vision.intermediate_size,
        "num_heads": vision.num_heads,
        "out_hidden_size": vision.out_hidden_size,
        "hidden_act": "silu",
        "in_channels": vision.in_channels,
        "patch_size": vision.patch_size,
        "temporal_patch_size": vision.temporal_patch_size,
        "spatial_merge_size": vision.spatial_merge_size,
        "window_size": vision.window_size,
        "fullatt_block_indexes": list(vision.fullatt_block_indexes),
        "tokens_per_second": vision.tokens_per_second,
        "rope_parameters": {"rope_type": "axial", "rope_theta": vision.rope_theta},
      },
    }

  @classmethod
  def from_hf(cls, hf_config: Any, **options) -> Qwen25VLConfig:
    """From a config.json dict or a transformers `Qwen2_5_VLConfig`; `options` set the run options."""
    if isinstance(hf_config, Mapping):
      raw = dict(hf_config)
    elif hasattr(hf_config, "to_dict"):
      raw = hf_config.to_dict()
    else:
      raise TypeError(f"expected a config dict or a transformers config, got {type(hf_config).__name__}")
    return cls(**_parse_top(raw), **options)


def validate(config: Qwen25VLConfig) -> None:
  """Raises ValueError naming the first inconsistent field."""
  text, vision = config.text, config.vision
  check_sizes(config, _check)
  _check(
    text.hidden_size % text.num_attention_heads == 0,
    f"text hidden_size {text.hidden_size} not divisible by num_attention_heads {text.num_attention_heads}",
  )
  _check(
    text.num_attention_heads % text.num_key_value_heads == 0,
    f"num_attention_heads {text.num_attention_heads} not divisible by num_key_value_heads {text.num_key_value_heads}",
  )
  _check(text.head_dim % 2 == 0, f"text head_dim {text.head_dim} must be even")
  _check(len(text.mrope_section) == 3, f"mrope_section must have 3 entries (T, H, W), got {text.mrope_section}")
  _check(
    sum(text.mrope_section) == text.head_dim // 2,
    f"sum(mrope_section)={sum(text.mrope_section)} must equal head_dim/2={text.head_dim // 2}",
  )
  _check(
    vision.hidden_size % vision.num_heads == 0,
    f"vision hidden_size {vision.hidden_size} not divisible by num_heads {vision.num_heads}",
  )
  _check(vision.head_dim % 4 == 0, f"vision head_dim {vision.head_dim} must be divisible by 4 (2D axial rotary)")
  _check(
    vision.out_hidden_size == text.hidden_size,
    f"vision out_hidden_size {vision.out_hidden_size} must equal text hidden_size {text.hidden_size}",
  )
  _check(
    vision.window_merged >= 1,
    f"window_size {vision.window_size} is smaller than one merged token "
    f"({vision.spatial_merge_size} x {vision.patch_size} pixels)",
  )
  _check(
    all(0 <= i < vision.depth for i in vision.fullatt_block_indexes),
    f"fullatt_block_indexes {vision.fullatt_block_indexes} out of range for depth {vision.depth}",
  )
  check_tokens_and_run_options(config, _check)


def check_sizes(config, check) -> None:
  """Every int field of ``config.text`` / ``config.vision`` a positive int, every float a positive number (shared by
  the families' configs; ``check(condition, message)`` raises their error)."""
  for part, sub in (("text", config.text), ("vision", config.vision)):
    for field in dataclasses.fields(sub):
      value = getattr(sub, field.name)
      if field.type == "int":
        check(
          not isinstance(value, bool) and isinstance(value, int) and value >= 1,
          f"{part} {field.name} must be a positive int, got {value!r}",
        )
      elif field.type == "float":
        check(
          not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0,
          f"{part} {field.name} must be a positive number, got {value!r}",
        )


def check_tokens_and_run_options(config, check) -> None:
  """Special token ids inside the vocabulary, and the run options (dtypes, precision, attention kernel, remat,
  max_frame_patches), for either family's config."""
  text, vision = config.text, config.vision
  for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
    token = getattr(config, name)
    check(0 <= token < text.vocab_size, f"{name}={token} outside the vocabulary (size {text.vocab_size})")
  check(config.dtype in DTYPES, f"dtype must be one of {sorted(DTYPES)}, got {config.dtype!r}")
  check(config.param_dtype in DTYPES, f"param_dtype must be one of {sorted(DTYPES)}, got {config.param_dtype!r}")
  check(config.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {config.precision!r}")
  check(
    config.attention_impl in ATTENTION_IMPLS,
    f"attention_impl must be one of {ATTENTION_IMPLS}, got {config.attention_impl!r}",
  )
  check(
    config.remat_policy is None or hasattr(jax.checkpoint_policies, config.remat_policy),
    f"remat_policy {config.remat_policy!r} is not a jax.checkpoint_policies name",
  )
  check(
    config.max_frame_patches is None
    or (isinstance(config.max_frame_patches, int) and config.max_frame_patches >= vision.merge_unit),
    f"max_frame_patches must be None or an int >= {vision.merge_unit}, got {config.max_frame_patches!r}",
  )


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(f"invalid Qwen2.5-VL config: {message}")


_TEXT_KEYS = (
  "vocab_size",
  "hidden_size",
  "intermediate_size",
  "num_hidden_layers",
  "num_attention_heads",
  "num_key_value_heads",
  "rms_norm_eps",
  "max_position_embeddings",
  "hidden_act",
  "head_dim",
  "rope_parameters",
  "rope_scaling",
  "rope_theta",
  "use_sliding_window",
  "tie_word_embeddings",
)


def _parse_top(raw: dict) -> dict:
  model_type = raw.get("model_type", "qwen2_5_vl")
  if model_type != "qwen2_5_vl":
    raise ValueError(f"not a Qwen2.5-VL config: model_type={model_type!r}")
  if "vision_config" not in raw or raw["vision_config"] is None:
    raise ValueError("config has no vision_config")
  if raw.get("text_config") is not None:
    text_raw = dict(raw["text_config"])
  else:  # Hub / transformers 4.x configs keep the text fields at the top level.
    text_raw = {k: raw[k] for k in _TEXT_KEYS if k in raw}
  tie = bool(raw.get("tie_word_embeddings", False)) or bool(text_raw.get("tie_word_embeddings", False))
  out = dict(text=_parse_text(text_raw), vision=_parse_vision(dict(raw["vision_config"])), tie_word_embeddings=tie)
  for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
    if raw.get(name) is not None:
      out[name] = int(raw[name])
  return out


def _require(raw: dict, key: str, where: str):
  if raw.get(key) is None:
    raise ValueError(f"{where} config is missing required field {key!r}")
  return raw[key]


def _parse_text(raw: dict) -> TextConfig:
  if raw.get("hidden_act", "silu") != "silu":
    raise ValueError(f"text hidden_act must be 'silu', got {raw['hidden_act']!r}")
  if raw.get("use_sliding_window"):
    raise ValueError("use_sliding_window=True is not supported (no Qwen2.5-VL checkpoint uses it)")
  hidden = int(_require(raw, "hidden_size", "text"))
  heads = int(_require(raw, "num_attention_heads", "text"))
  if raw.get("head_dim") is not None and int(raw["head_dim"]) != hidden // heads:
    # transformers' rotary reads head_dim but its attention uses hidden // heads: the model would disagree with itself.
    raise ValueError(f"text head_dim={raw['head_dim']} differs from hidden_size/num_attention_heads={hidden // heads}")
  rope = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type not in ("default", "mrope"):
    raise ValueError(f"unsupported text rope_type {rope_type!r} (only default/mrope)")
  theta = rope.get("rope_theta", raw.get("rope_theta", 1000000.0))
  kv_heads = raw.get("num_key_value_heads")
  return TextConfig(
    vocab_size=int(_require(raw, "vocab_size", "text")),
    hidden_size=hidden,
    intermediate_size=int(_require(raw, "intermediate_size", "text")),
    num_hidden_layers=int(_require(raw, "num_hidden_layers", "text")),
    num_attention_heads=heads,
    num_key_value_heads=int(heads if kv_heads is None else kv_heads),
    rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
    rope_theta=float(theta),
    mrope_section=tuple(int(s) for s in rope.get("mrope_section", (16, 24, 24))),
    max_position_embeddings=int(raw.get("max_position_embeddings", 32768)),
  )


def _parse_vision(raw: dict) -> VisionConfig:
  model_type = raw.get("model_type", "qwen2_5_vl_vision")
  if model_type not in ("qwen2_5_vl_vision", "qwen2_5_vl"):  # old checkpoints say "qwen2_5_vl"
    raise ValueError(f"not a Qwen2.5-VL vision config: model_type={model_type!r}")
  if raw.get("hidden_act", "silu") != "silu":
    raise ValueError(f"vision hidden_act must be 'silu', got {raw['hidden_act']!r}")
  aliases = {"num_attention_heads": "num_heads", "num_hidden_layers": "depth"}
  for alias, name in aliases.items():
    if alias in raw and name not in raw:
      raw[name] = raw[alias]
  rope = dict(raw.get("rope_parameters") or {})
  if rope.get("rope_type", "axial") != "axial":
    raise ValueError(f"vision rope_type must be 'axial', got {rope['rope_type']!r}")
  defaults = VisionConfig.__dataclass_fields__
  optional = {
    name: type(defaults[name].default)(raw[name])
    for name in (
      "patch_size",
      "temporal_patch_size",
      "spatial_merge_size",
      "in_channels",
      "window_size",
      "tokens_per_second",
    )
    if raw.get(name) is not None
  }
  return VisionConfig(
    depth=int(_require(raw, "depth", "vision")),
    hidden_size=int(_require(raw, "hidden_size", "vision")),
    intermediate_size=int(_require(raw, "intermediate_size", "vision")),
    num_heads=int(_require(raw, "num_heads", "vision")),
    out_hidden_size=int(_require(raw, "out_hidden_size", "vision")),
    fullatt_block_indexes=tuple(int(i) for i in raw.get("fullatt_block_indexes", (7, 15, 23, 31))),
    rope_theta=float(rope.get("rope_theta", 10000.0)),
    **optional,
  )
