"""The one attention function used by the vision tower, the full forward and the cached prefill/decode.

The mask is described the way Splash attention wants it (segment ids, plus sequence positions for causality)
rather than as a dense array, so a TPU kernel can be plugged in here behind `impl` without touching the callers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Large but finite: a fully masked row (left-padding query) gives a uniform softmax instead of NaN.
_MASKED_LOGIT = -1e30


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array, *,
                          query_segment_ids: jax.Array, kv_segment_ids: jax.Array,
                          query_positions: jax.Array | None = None, kv_positions: jax.Array | None = None,
                          impl: str = "xla", precision=None) -> jax.Array:
  """softmax(q k^T / sqrt(hd)) v over keys with the same segment id (and kv position <= query position when
  positions are given).

  query [B, Sq, H, hd]; key, value [B, Sk, KV, hd] with H % KV == 0 (query head j reads KV head j // (H / KV));
  segment ids [B, Sq] / [B, Sk]; positions [B, Sq] / [B, Sk] are sequence (cache slot) indices for the causal
  mask, not RoPE positions. Returns [B, Sq, H, hd] in value's dtype. Softmax is in float32.
  """
  if (query_positions is None) != (kv_positions is None):
    raise ValueError("give both query_positions and kv_positions (causal) or neither (bidirectional)")
  if impl == "xla":
    return _xla_attention(query, key, value, query_segment_ids, kv_segment_ids, query_positions, kv_positions,
                          precision)
  raise ValueError(f"unknown attention impl {impl!r}")


def _xla_attention(query, key, value, query_segment_ids, kv_segment_ids, query_positions, kv_positions, precision):
  batch, q_len, num_heads, head_dim = query.shape
  num_kv_heads = key.shape[2]
  groups = num_heads // num_kv_heads
  query = query.reshape(batch, q_len, num_kv_heads, groups, head_dim)
  logits = jnp.einsum("bqkgd,bskd->bkgqs", query, key, precision=precision,
                      preferred_element_type=jnp.float32) * (head_dim**-0.5)
  mask = query_segment_ids[:, :, None] == kv_segment_ids[:, None, :]  # [B, Sq, Sk]
  if query_positions is not None:
    mask &= kv_positions[:, None, :] <= query_positions[:, :, None]
  logits = jnp.where(mask[:, None, None], logits, _MASKED_LOGIT)
  probs = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
  out = jnp.einsum("bkgqs,bskd->bqkgd", probs, value, precision=precision)
  return out.reshape(batch, q_len, num_heads, head_dim)
