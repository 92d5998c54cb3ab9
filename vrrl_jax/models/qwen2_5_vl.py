"""Qwen2.5-VL (vision tower + Qwen2 decoder with M-RoPE) in Flax Linen, numerically equal to transformers'
`Qwen2_5_VLForConditionalGeneration` in float32.

Two entry points:
  * `model.apply({"params": p}, input_ids=..., attention_mask=..., pixel_values=..., image_grid_thw=...,
    mm_token_type_ids=...)`: the processor's numpy arrays; host-side preparation happens inside (not jittable).
  * `model.apply({"params": p}, inputs, cache, method=Qwen25VL.forward)`: jittable, on the static-shape
    `ModelInputs` made by `prepare_inputs`; with a KVCache it does prefill / append / decode.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import numpy as np

from vrrl_jax.models import attention as attention_lib
from vrrl_jax.models import kv_cache as kv_cache_lib
from vrrl_jax.models import rope
from vrrl_jax.models.config import Qwen25VLConfig
from vrrl_jax.models.decoder import DecoderInputs, TextModel, scatter_image_features
from vrrl_jax.models import inputs as inputs_lib
from vrrl_jax.models.inputs import ModelInputs, ModelOutput
from vrrl_jax.models.layers import GatedMlp, RMSNorm, dense
from vrrl_jax.models.vision import VisionInputs, VisionTower, prepare_vision_inputs

KVCache = kv_cache_lib.KVCache


def prepare_inputs(
  config: Qwen25VLConfig,
  input_ids,
  attention_mask=None,
  pixel_values=None,
  image_grid_thw=None,
  mm_token_type_ids=None,
  patch_multiple: int = 256,
) -> tuple[ModelInputs, np.ndarray]:
  """Host-side preparation of processor outputs (`vrrl_jax.models.inputs.prepare_inputs`): M-RoPE positions,
  packed vision inputs. Returns the inputs and rope_deltas [B]."""
  return inputs_lib.prepare_inputs(
    config,
    prepare_vision_inputs,
    input_ids,
    attention_mask,
    pixel_values,
    image_grid_thw,
    mm_token_type_ids,
    patch_multiple,
  )


class Attention(nn.Module):
  """GQA self-attention with q/k/v bias and M-RoPE; writes k, v to the cache (after RoPE) when there is one."""

  config: Qwen25VLConfig

  @nn.compact
  def __call__(self, x, inputs: DecoderInputs, layer_kv, layer_index):
    cfg, text = self.config, self.config.text
    kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, precision=cfg.matmul_precision)
    heads, kv_heads, head_dim = text.num_attention_heads, text.num_key_value_heads, text.head_dim
    query = dense((heads, head_dim), ("embed", "q_heads", "head_dim"), use_bias=True, name="q_proj", **kw)(x)
    key = dense((kv_heads, head_dim), ("embed", "kv_heads", "head_dim"), use_bias=True, name="k_proj", **kw)(x)
    value = dense((kv_heads, head_dim), ("embed", "kv_heads", "head_dim"), use_bias=True, name="v_proj", **kw)(x)
    query = rope.apply_rotary(query, inputs.cos, inputs.sin)
    key = rope.apply_rotary(key, inputs.cos, inputs.sin)
    if layer_kv is not None:
      cache_key, cache_value = layer_kv
      cache_key = kv_cache_lib.write_layer(cache_key, layer_index, inputs.write_slots, key)
      cache_value = kv_cache_lib.write_layer(cache_value, layer_index, inputs.write_slots, value)
      key, value = cache_key[layer_index], cache_value[layer_index]
      layer_kv = (cache_key, cache_value)
    if inputs.write_slots is None:  # no cache: the sequence against itself, positions = arange
      out = attention_lib.self_attention(
        query,
        key,
        value,
        inputs.query_segment_ids,
        causal=True,
        impl=cfg.attention_impl,
        precision=cfg.matmul_precision,
      )
    else:
      out = attention_lib.dot_product_attention(
        query,
        key,
        value,
        query_segment_ids=inputs.query_segment_ids,
        kv_segment_ids=inputs.kv_segment_ids,
        query_positions=inputs.query_positions,
        kv_positions=inputs.kv_positions,
        impl=cfg.attention_impl,
        precision=cfg.matmul_precision,
      )
    out = dense(
      text.hidden_size, ("q_heads", "head_dim", "embed"), num_input_axes=2, use_bias=False, name="o_proj", **kw
    )(out)
    return out, layer_kv


class DecoderLayer(nn.Module):
  """Pre-norm Qwen2 layer. Signature fits nn.scan: (carry, layer_index, (inputs, None)) -> (carry, None)."""

  config: Qwen25VLConfig

  @nn.compact
  def __call__(self, carry, layer_index, shared):
    cfg, text = self.config, self.config.text
    x, layer_kv = carry
    inputs, _ = shared  # no per-layer additions in Qwen2.5-VL
    norm = lambda name: RMSNorm(text.rms_norm_eps, cfg.compute_dtype, cfg.weight_dtype, name=name)
    attn_out, layer_kv = Attention(cfg, name="self_attn")(norm("input_layernorm")(x), inputs, layer_kv, layer_index)
    x = x + attn_out
    mlp = GatedMlp(
      text.hidden_size,
      text.intermediate_size,
      use_bias=False,
      embed_axis="embed",
      mlp_axis="mlp",
      dtype=cfg.compute_dtype,
      param_dtype=cfg.weight_dtype,
      precision=cfg.matmul_precision,
      name="mlp",
    )
    x = x + mlp(norm("post_attention_layernorm")(x))
    x = nn.with_logical_constraint(x, ("activation_batch", "activation_length", "activation_embed"))
    return (x, layer_kv), None


class Qwen25VL(nn.Module):
  config: Qwen25VLConfig

  def setup(self):
    self.visual = VisionTower(self.config)
    self.language_model = TextModel(self.config, DecoderLayer)

  def __call__(
    self, input_ids, attention_mask=None, pixel_values=None, image_grid_thw=None, mm_token_type_ids=None
  ) -> ModelOutput:
    """Logits for the HF processor's numpy arrays (host-side preparation inside: call un-jitted)."""
    arrays = (input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids)
    if any(isinstance(a, jax.core.Tracer) for a in arrays):
      raise ValueError(
        "Qwen25VL.__call__ prepares inputs on the host and cannot be traced; under jit use "
        "prepare_inputs(...) and method=Qwen25VL.forward"
      )
    inputs, _ = prepare_inputs(self.config, input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids)
    return self.forward(inputs)

  def forward(self, inputs: ModelInputs, cache: KVCache | None = None, return_logits: bool = True) -> ModelOutput:
    """Jittable forward on prepared inputs. With a cache, the chunk is appended at each row's own length.

    With return_logits=False, `.logits` holds the final normed hidden states [B, S, D] instead; apply
    `method=Qwen25VL.lm_logits` to the positions that need logits.
    """
    embeds = self.language_model.embed(inputs.input_ids)
    if inputs.vision is not None:
      features = self.visual(inputs.vision)
      embeds = scatter_image_features(embeds, features, inputs.input_ids == self.config.image_token_id)
    out, cache = self.language_model(embeds, inputs.positions, inputs.segment_ids, cache, None, return_logits)
    return ModelOutput(logits=out, cache=cache)

  def lm_logits(self, hidden: jax.Array) -> jax.Array:
    """float32 logits for final hidden states of any leading shape."""
    return self.language_model.logits(hidden)

  def encode_images(self, vision: VisionInputs) -> jax.Array:
    """Merged image features [M, D] in raster order (transformers' visual(...).pooler_output, padded)."""
    return self.visual(vision)


Config = Qwen25VLConfig  # the family surface (vrrl_jax.models.families); Model is below


def init_cache(config: Qwen25VLConfig, batch: int, max_len: int) -> KVCache:
  text = config.text
  return kv_cache_lib.init_cache(
    text.num_hidden_layers, batch, max_len, text.num_key_value_heads, text.head_dim, config.compute_dtype
  )


Model = Qwen25VL


def _dummy_inputs(config: Qwen25VLConfig) -> ModelInputs:
  """Smallest input that touches every parameter: one image of one merged token and one text token."""
  merge = config.vision.spatial_merge_size
  ids = np.array([[config.image_token_id, 0]])
  grid = np.array([[1, merge, merge]])
  pixels = np.zeros((merge * merge, config.vision.patch_dim), np.float32)
  inputs, _ = prepare_inputs(
    config, ids, pixel_values=pixels, image_grid_thw=grid, patch_multiple=config.vision.merge_unit
  )
  return inputs


def _init_boxed(config: Qwen25VLConfig, rng: jax.Array):
  model = Qwen25VL(config)
  return model.init(rng, _dummy_inputs(config), method=Qwen25VL.forward)["params"]


def init_params(config: Qwen25VLConfig, rng: jax.Array):
  """Random params (unboxed) and their logical PartitionSpecs (same tree)."""
  boxed = jax.jit(functools.partial(_init_boxed, config))(rng)
  return nn.unbox(boxed), nn.get_partition_spec(boxed)


def abstract_params(config: Qwen25VLConfig):
  """Param ShapeDtypeStructs and logical PartitionSpecs, without allocating (for sharded init / loading)."""
  boxed = jax.eval_shape(functools.partial(_init_boxed, config), jax.random.key(0))
  return nn.unbox(boxed), nn.get_partition_spec(boxed)
