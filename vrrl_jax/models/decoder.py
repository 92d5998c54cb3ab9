"""The decoder stack both families share: the inputs every layer needs, the text model (embedding, layers, final
norm, LM head, KV cache plumbing), and the scatter of image features into the token embeddings."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from vrrl_jax.models import kv_cache as kv_cache_lib
from vrrl_jax.models import rope
from vrrl_jax.models.kv_cache import KVCache
from vrrl_jax.models.layers import KERNEL_INIT, RMSNorm


@flax.struct.dataclass
class DecoderInputs:
  """What every decoder layer needs besides its hidden states (broadcast over scanned layers)."""

  cos: jax.Array  # [B, S, hd]
  sin: jax.Array
  query_segment_ids: jax.Array  # [B, S]
  kv_segment_ids: jax.Array  # [B, Skv] (Skv = S without a cache, max_len with one)
  query_positions: jax.Array  # [B, S] sequence / cache-slot index (causal mask)
  kv_positions: jax.Array  # [B, Skv]
  write_slots: jax.Array | None  # [B, S] cache slots of this chunk, None without a cache


def scatter_image_features(embeds: jax.Array, features: jax.Array, is_image: jax.Array) -> jax.Array:
  """Puts features[k] at the k-th image token in row-major (B, S) order (transformers' masked_scatter)."""
  batch, length, dim = embeds.shape
  flat_mask = is_image.reshape(-1)
  index = jnp.clip(jnp.cumsum(flat_mask) - 1, 0, features.shape[0] - 1)
  gathered = features[index].reshape(batch, length, dim).astype(embeds.dtype)
  return jnp.where(is_image[..., None], gathered, embeds)


class TextModel(nn.Module):
  """Embedding, decoder layers (``layer``, a family's), final norm and LM head (tied to the embedding or not).

  ``layer`` is called as ``layer(config)((x, layer_kv), layer_index, (inputs, deep))`` (nn.scan's signature):
  ``deep`` [n, B, S, D] holds additions for the first n layers' outputs (Qwen3-VL's DeepStack) or is None.
  ``interleaved_mrope``: Qwen3-VL's rotary layout instead of Qwen2.5-VL's chunks.
  """

  config: Any
  layer: Any
  interleaved_mrope: bool = False

  def setup(self):
    cfg, text = self.config, self.config.text
    self.embed_tokens = self.param(
      "embed_tokens",
      nn.with_logical_partitioning(KERNEL_INIT, ("vocab", "embed")),  # HF initializer_range
      (text.vocab_size, text.hidden_size),
      cfg.weight_dtype,
    )
    layer_cls = self.layer
    if cfg.remat_policy is not None:
      layer_cls = nn.remat(layer_cls, policy=cfg.remat_policy_fn, prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      self.layers = nn.scan(
        layer_cls,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=(0, nn.broadcast),
        length=text.num_hidden_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
      )(cfg)
    else:
      self.layers = [layer_cls(cfg) for _ in range(text.num_hidden_layers)]
    self.norm = RMSNorm(text.rms_norm_eps, cfg.compute_dtype, cfg.weight_dtype)
    if not cfg.tie_word_embeddings:
      self.lm_head = self.param(
        "lm_head",
        nn.with_logical_partitioning(KERNEL_INIT, ("embed", "vocab")),
        (text.hidden_size, text.vocab_size),
        cfg.weight_dtype,
      )

  def embed(self, input_ids: jax.Array) -> jax.Array:
    return self.embed_tokens[input_ids].astype(self.config.compute_dtype)

  def __call__(
    self,
    embeds,
    positions,
    segment_ids,
    cache: KVCache | None,
    deep: jax.Array | None = None,
    return_logits: bool = True,
  ):
    """Embeddings [B, S, D] -> (logits [B, S, V] float32, or final hidden states when not return_logits;
    updated cache)."""
    cfg, text = self.config, self.config.text
    batch, length = segment_ids.shape
    cos, sin = rope.mrope_cos_sin(
      positions,
      text.head_dim,
      text.rope_theta,
      text.mrope_section,
      cfg.compute_dtype,
      interleaved=self.interleaved_mrope,
    )
    if cache is None:
      sequence = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
      inputs = DecoderInputs(cos, sin, segment_ids, segment_ids, sequence, sequence, None)
      layer_kv = None
    else:
      slots = kv_cache_lib.chunk_slots(cache.lengths, length)
      kv_segment_ids = kv_cache_lib.write_rows(cache.segment_ids, slots, segment_ids)
      cache_positions = jnp.broadcast_to(jnp.arange(cache.max_len, dtype=jnp.int32), (batch, cache.max_len))
      inputs = DecoderInputs(cos, sin, segment_ids, kv_segment_ids, slots, cache_positions, slots)
      layer_kv = (cache.key, cache.value)

    x = nn.with_logical_constraint(embeds, ("activation_batch", "activation_length", "activation_embed"))
    if cfg.scan_layers:
      (x, layer_kv), _ = self.layers((x, layer_kv), jnp.arange(text.num_hidden_layers), (inputs, deep))
    else:
      for i, layer in enumerate(self.layers):
        (x, layer_kv), _ = layer((x, layer_kv), i, (inputs, deep))
    x = self.norm(x)
    new_cache = None
    if cache is not None:
      new_cache = KVCache(
        key=layer_kv[0],
        value=layer_kv[1],
        segment_ids=inputs.kv_segment_ids,
        lengths=kv_cache_lib.advanced_lengths(cache.lengths, segment_ids),
      )
    if not return_logits:
      return x, new_cache
    return self.logits(x), new_cache

  def logits(self, hidden: jax.Array) -> jax.Array:
    """LM head on final (normed) hidden states [..., D] -> float32 logits [..., V].

    Separate so callers can apply it to a few positions (decode) or in chunks (log-probs for RL) instead of
    materialising [batch, seq, vocab] at once.
    """
    cfg = self.config
    if cfg.tie_word_embeddings:
      return jnp.einsum(
        "...d,vd->...v",
        hidden,
        self.embed_tokens.astype(hidden.dtype),
        precision=cfg.matmul_precision,
        preferred_element_type=jnp.float32,
      )
    return jnp.einsum(
      "...d,dv->...v",
      hidden,
      self.lm_head.astype(hidden.dtype),
      precision=cfg.matmul_precision,
      preferred_element_type=jnp.float32,
    )
