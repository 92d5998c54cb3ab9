"""Qwen3-VL (vision tower with DeepStack + Qwen3 decoder with interleaved M-RoPE) in Flax Linen, numerically equal
to transformers' `Qwen3VLForConditionalGeneration` in float32.

The same two entry points as Qwen2.5-VL: `model.apply({"params": p}, input_ids=..., pixel_values=...,
image_grid_thw=..., ...)` on the processor's numpy arrays (host-side preparation inside, not jittable), and the
jittable `method=Qwen3VL.forward` on `prepare_inputs`' static-shape `ModelInputs`, with a KVCache for prefill /
append / decode. DeepStack: the features of the listed vision blocks are added to the decoder's hidden states at
the image tokens of the current chunk after decoder layers 0, 1, ... (prefill chunks; decode steps have none).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vrrl_jax.models import attention as attention_lib
from vrrl_jax.models import kv_cache as kv_cache_lib
from vrrl_jax.models import rope
from vrrl_jax.models.decoder import DecoderInputs, TextModel, scatter_image_features
from vrrl_jax.models import inputs as inputs_lib
from vrrl_jax.models.inputs import ModelInputs, ModelOutput
from vrrl_jax.models.layers import GatedMlp, RMSNorm, dense
from vrrl_jax.models.qwen3_vl.config import Qwen3VLConfig
from vrrl_jax.models.qwen3_vl.vision import VisionInputs, VisionTower, prepare_vision_inputs

KVCache = kv_cache_lib.KVCache


def prepare_inputs(
  config: Qwen3VLConfig,
  input_ids,
  attention_mask=None,
  pixel_values=None,
  image_grid_thw=None,
  mm_token_type_ids=None,
  patch_multiple: int = 256,
) -> tuple[ModelInputs, np.ndarray]:
  """Host-side preparation of processor outputs (`vrrl_jax.models.inputs.prepare_inputs`; Qwen3-VL's
  `get_rope_index` equals Qwen2.5-VL's for images). Returns the inputs and rope_deltas [B]."""
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
  """GQA self-attention, no biases, RMSNorm on each query and key head before the interleaved M-RoPE; writes k, v
  to the cache (after RoPE) when there is one."""

  config: Qwen3VLConfig

  @nn.compact
  def __call__(self, x, inputs: DecoderInputs, layer_kv, layer_index):
    cfg, text = self.config, self.config.text
    kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, precision=cfg.matmul_precision)
    heads, kv_heads, head_dim = text.num_attention_heads, text.num_key_value_heads, text.head_dim
    norm = lambda name: RMSNorm(text.rms_norm_eps, cfg.compute_dtype, cfg.weight_dtype, axis_name="head_dim", name=name)
    query = dense((heads, head_dim), ("embed", "q_heads", "head_dim"), use_bias=False, name="q_proj", **kw)(x)
    key = dense((kv_heads, head_dim), ("embed", "kv_heads", "head_dim"), use_bias=False, name="k_proj", **kw)(x)
    value = dense((kv_heads, head_dim), ("embed", "kv_heads", "head_dim"), use_bias=False, name="v_proj", **kw)(x)
    query = rope.apply_rotary(norm("q_norm")(query), inputs.cos, inputs.sin)
    key = rope.apply_rotary(norm("k_norm")(key), inputs.cos, inputs.sin)
    if layer_kv is not None:
      cache_key, cache_value = layer_kv
      cache_key = kv_cache_lib.write_layer(cache_key, layer_index, inputs.write_slots, key)
      cache_value = kv_cache_lib.write_layer(cache_value, layer_index, inputs.write_slots, value)
      key, value = cache_key[layer_index], cache_value[layer_index]
      layer_kv = (cache_key, cache_value)
    if inputs.write_slots is None:
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
  """Pre-norm Qwen3 layer, then its DeepStack addition: ``deep`` [n, B, S, D] (zero off the image tokens) holds one
  slice for each of the first n layers. Signature fits nn.scan: (carry, layer_index, (inputs, deep))."""

  config: Qwen3VLConfig

  @nn.compact
  def __call__(self, carry, layer_index, shared):
    cfg, text = self.config, self.config.text
    x, layer_kv = carry
    inputs, deep = shared
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
    if deep is not None:
      n = deep.shape[0]
      if isinstance(layer_index, int):  # unrolled layers: a static choice
        x = x + deep[layer_index].astype(x.dtype) if layer_index < n else x
      else:  # scanned: every layer reads a slice, and only the first n add it
        x = x + jnp.where(layer_index < n, deep[jnp.minimum(layer_index, n - 1)], 0).astype(x.dtype)
    x = nn.with_logical_constraint(x, ("activation_batch", "activation_length", "activation_embed"))
    return (x, layer_kv), None


class Qwen3VL(nn.Module):
  config: Qwen3VLConfig

  def setup(self):
    self.visual = VisionTower(self.config)
    self.language_model = TextModel(self.config, DecoderLayer, interleaved_mrope=True)

  def __call__(
    self, input_ids, attention_mask=None, pixel_values=None, image_grid_thw=None, mm_token_type_ids=None
  ) -> ModelOutput:
    """Logits for the HF processor's numpy arrays (host-side preparation inside: call un-jitted)."""
    arrays = (input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids)
    if any(isinstance(a, jax.core.Tracer) for a in arrays):
      raise ValueError(
        "Qwen3VL.__call__ prepares inputs on the host and cannot be traced; under jit use "
        "prepare_inputs(...) and method=Qwen3VL.forward"
      )
    inputs, _ = prepare_inputs(self.config, input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids)
    return self.forward(inputs)

  def forward(self, inputs: ModelInputs, cache: KVCache | None = None, return_logits: bool = True) -> ModelOutput:
    """Jittable forward on prepared inputs. With a cache, the chunk is appended at each row's own length."""
    embeds = self.language_model.embed(inputs.input_ids)
    deep = None
    if inputs.vision is not None:
      features, deep_features = self.visual(inputs.vision)
      is_image = inputs.input_ids == self.config.image_token_id
      embeds = scatter_image_features(embeds, features, is_image)
      zeros = jnp.zeros_like(embeds)
      deep = (
        jnp.stack([scatter_image_features(zeros, f, is_image) for f in deep_features]) if len(deep_features) else None
      )
    out, cache = self.language_model(embeds, inputs.positions, inputs.segment_ids, cache, deep, return_logits)
    return ModelOutput(logits=out, cache=cache)

  def lm_logits(self, hidden: jax.Array) -> jax.Array:
    return self.language_model.logits(hidden)

  def encode_images(self, vision: VisionInputs) -> tuple[jax.Array, jax.Array]:
    """(merged image features [M, D], DeepStack features [n, M, D]) in the processor's order (padded)."""
    return self.visual(vision)


def init_cache(config: Qwen3VLConfig, batch: int, max_len: int) -> KVCache:
  text = config.text
  return kv_cache_lib.init_cache(
    text.num_hidden_layers, batch, max_len, text.num_key_value_heads, text.head_dim, config.compute_dtype
  )


def _dummy_inputs(config: Qwen3VLConfig) -> ModelInputs:
  merge = config.vision.spatial_merge_size
  ids = np.array([[config.image_token_id, 0]])
  grid = np.array([[1, merge, merge]])
  pixels = np.zeros((merge * merge, config.vision.patch_dim), np.float32)
  inputs, _ = prepare_inputs(
    config,
    ids,
    pixel_values=pixels,
    image_grid_thw=grid,
    mm_token_type_ids=(ids == config.image_token_id).astype(np.int32),
    patch_multiple=config.vision.merge_unit,
  )
  return inputs


def _init_boxed(config: Qwen3VLConfig, rng: jax.Array):
  return Qwen3VL(config).init(rng, _dummy_inputs(config), method=Qwen3VL.forward)["params"]


def init_params(config: Qwen3VLConfig, rng: jax.Array):
  """Random params (unboxed) and their logical PartitionSpecs (same tree)."""
  boxed = jax.jit(functools.partial(_init_boxed, config))(rng)
  return nn.unbox(boxed), nn.get_partition_spec(boxed)


def abstract_params(config: Qwen3VLConfig):
  """Param ShapeDtypeStructs and logical PartitionSpecs, without allocating."""
  boxed = jax.eval_shape(functools.partial(_init_boxed, config), jax.random.key(0))
  return nn.unbox(boxed), nn.get_partition_spec(boxed)
