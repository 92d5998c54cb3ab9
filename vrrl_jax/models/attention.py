"""The attention functions used by the vision tower, the full forward and the cached prefill/decode.

Masks are described the way Splash attention wants them (segment ids, plus sequence positions for causality)
rather than as dense arrays, so a TPU kernel can be plugged in here behind `impl` without touching the callers.

Three entry points, one softmax(q k^T / sqrt(hd)) v underneath (`_attention_tile`):
  * `dot_product_attention`: any query chunk against any key set (the KV cache); dense over all keys.
  * `self_attention`: a sequence against itself (no cache), in blocks of queries; the upper triangle (causal) and
    tiles between different segments (images) are skipped.
  * `local_attention`: a sequence against itself when every segment is a run of at most `chunk` consecutive
    positions (the vision windows): each chunk of queries only reads its own and the two neighbouring chunks.
The blocked forms keep the [heads, queries, keys] temporaries small; on CPU that matters more than the FLOPs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# Large but finite: a fully masked row (left-padding query) gives a uniform softmax instead of NaN.
_MASKED_LOGIT = -1e30
# Segment id of the padding `local_attention` adds; callers' segment ids must differ from it.
_PAD_SEGMENT = jnp.iinfo(jnp.int32).min


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
  _check_impl(impl)
  mask = query_segment_ids[:, :, None] == kv_segment_ids[:, None, :]  # [B, Sq, Sk]
  if query_positions is not None:
    mask &= kv_positions[:, None, :] <= query_positions[:, :, None]
  return _masked_attention(query, _heads_major(key), _heads_major(value), mask, precision)


def self_attention(query: jax.Array, key: jax.Array, value: jax.Array, segment_ids: jax.Array, *, causal: bool,
                   block_size: int = 256, impl: str = "xla", precision=None) -> jax.Array:
  """`dot_product_attention` of a sequence against itself (query_segment_ids = kv_segment_ids = segment_ids,
  positions = arange(S) when causal), `block_size` queries at a time.

  Causal: a query block reads the keys up to its own end only (the upper triangle is never built).
  Bidirectional: keys are taken in blocks too, and a (query block, key block) tile whose segments share nothing
  (two images) is skipped at run time with lax.cond; the tiles' softmax statistics are combined at the end (as
  in flash-decoding). Either way the [heads, queries, keys] temporaries stay small.
  """
  _check_impl(impl)
  length, num_heads, num_kv_heads = query.shape[1], query.shape[2], key.shape[2]
  groups = num_heads // num_kv_heads
  index = jnp.arange(length, dtype=jnp.int32)
  key, value = _heads_major(key), _heads_major(value)
  starts = range(0, length, block_size)
  outputs = []
  for q_start in starts:
    q_end = min(q_start + block_size, length)
    # Slicing along the sequence before changing the layout lets XLA do both in one copy.
    q_block = _stack_query_heads(query[:, q_start:q_end], num_kv_heads)

    def tile(k_start, k_end):
      mask = segment_ids[:, q_start:q_end, None] == segment_ids[:, None, k_start:k_end]
      if causal:
        mask &= index[None, None, k_start:k_end] <= index[None, q_start:q_end, None]
      return mask, functools.partial(_attention_tile, q_block, key[:, :, k_start:k_end],
                                     value[:, :, k_start:k_end], mask, groups, precision)

    if causal:
      parts = [tile(0, q_end)[1]()]
    else:
      parts = []
      for k_start in starts:
        mask, compute = tile(k_start, min(k_start + block_size, length))
        if k_start == q_start:  # the diagonal tile holds each query's own key: never empty
          parts.append(compute())
        else:
          parts.append(jax.lax.cond(jnp.any(mask), compute, functools.partial(_empty_tile, q_block)))
    outputs.append(_unstack_query_heads(_combine_tiles(parts).astype(value.dtype), num_heads))
  return jnp.concatenate(outputs, axis=1) if len(outputs) > 1 else outputs[0]


def _empty_tile(query):
  """What `_attention_tile` gives for a tile with no unmasked key: nothing, with weight 0 after combining."""
  return (jnp.zeros(query.shape, jnp.float32), jnp.full(query.shape[:-1], _MASKED_LOGIT, jnp.float32),
          jnp.zeros(query.shape[:-1], jnp.float32))


def _attention_tile(query, key, value, mask, groups, precision):
  """Unnormalised tile: (exp(logits - rowmax) @ v, rowmax, rowsum), all float32.

  query [B, KV, G * Sq, hd] (query heads of a KV head stacked along the query axis), key, value [B, KV, Sk, hd],
  mask [B, Sq, Sk]."""
  batch, num_kv_heads, rows, head_dim = query.shape
  kv_len = key.shape[2]
  logits = jnp.einsum("bkqd,bksd->bkqs", query, key, precision=precision, preferred_element_type=jnp.float32)
  logits = logits.reshape(batch, num_kv_heads, groups, rows // groups, kv_len) * (head_dim**-0.5)
  logits = jnp.where(mask[:, None, None], logits, _MASKED_LOGIT).reshape(batch, num_kv_heads, rows, kv_len)
  row_max = jnp.max(logits, axis=-1)
  probs = jnp.exp(logits - row_max[..., None])
  row_sum = jnp.sum(probs, axis=-1)
  out = jnp.einsum("bkqs,bksd->bkqd", probs.astype(value.dtype), value, precision=precision,
                   preferred_element_type=jnp.float32)
  return out, row_max, row_sum


def _combine_tiles(parts):
  """Normalised attention output from the tiles of one query block (each rescaled to the common row max)."""
  if len(parts) == 1:
    out, _, row_sum = parts[0]
    return out / row_sum[..., None]
  row_max = functools.reduce(jnp.maximum, [m for _, m, _ in parts])
  weights = [jnp.exp(m - row_max) for _, m, _ in parts]
  out = sum(w[..., None] * o for w, (o, _, _) in zip(weights, parts))
  return out / sum(w * l for w, (_, _, l) in zip(weights, parts))[..., None]


def local_attention(query: jax.Array, key: jax.Array, value: jax.Array, segment_ids: jax.Array, *, chunk: int,
                    impl: str = "xla", precision=None) -> jax.Array:
  """Bidirectional `self_attention` for queries whose segment is a run of at most `chunk` consecutive positions.

  The sequence is cut into chunks of `chunk`; a segment of that length starting anywhere lies within its
  queries' own chunk and the two beside it, so each chunk attends to 3 * chunk keys instead of all of them.
  Queries in longer segments (e.g. the vision tower's padding patches) only see the part of their segment that
  lies in that band.
  """
  _check_impl(impl)
  batch, length, num_heads, head_dim = query.shape
  num_chunks = -(-length // chunk)
  # Padded to whole chunks plus one empty chunk on each side, with a segment id nobody else has.
  seq_padding = ((0, 0), (chunk, num_chunks * chunk - length + chunk))
  pad_seq = lambda x, fill: jnp.pad(x, seq_padding + ((0, 0),) * (x.ndim - 2), constant_values=fill)
  chunked = lambda x: x.reshape((batch, num_chunks + 2, chunk) + x.shape[2:])
  band = lambda x: jnp.concatenate([x[:, :-2], x[:, 1:-1], x[:, 2:]], axis=2).reshape(
      (batch * num_chunks, 3 * chunk) + x.shape[3:])
  key_band, value_band = band(chunked(pad_seq(key, 0))), band(chunked(pad_seq(value, 0)))
  segments = chunked(pad_seq(segment_ids, _PAD_SEGMENT))
  query_chunks = chunked(pad_seq(query, 0))[:, 1:-1].reshape(batch * num_chunks, chunk, num_heads, head_dim)
  mask = segments[:, 1:-1].reshape(batch * num_chunks, chunk)[:, :, None] == band(segments)[:, None, :]
  out = _masked_attention(query_chunks, _heads_major(key_band), _heads_major(value_band), mask, precision)
  return out.reshape(batch, num_chunks * chunk, num_heads, head_dim)[:, :length]


def _check_impl(impl: str) -> None:
  if impl != "xla":
    raise ValueError(f"unknown attention impl {impl!r}")


def _heads_major(x: jax.Array) -> jax.Array:
  """[B, S, KV, hd] -> [B, KV, S, hd]: keys/values laid out so both attention matmuls are plain batched GEMMs."""
  return jnp.swapaxes(x, 1, 2)


def _stack_query_heads(query: jax.Array, num_kv_heads: int) -> jax.Array:
  """[B, Sq, H, hd] -> [B, KV, G * Sq, hd]: the query heads that share a KV head (query head j reads KV head
  j // G) stacked along the query axis, so GQA needs no repeated keys and each matmul is a GEMM per (B, KV)."""
  batch, q_len, num_heads, head_dim = query.shape
  groups = num_heads // num_kv_heads
  query = query.reshape(batch, q_len, num_kv_heads, groups, head_dim).transpose(0, 2, 3, 1, 4)
  return query.reshape(batch, num_kv_heads, groups * q_len, head_dim)


def _unstack_query_heads(out: jax.Array, num_heads: int) -> jax.Array:
  """Inverse of `_stack_query_heads`: [B, KV, G * Sq, hd] -> [B, Sq, H, hd]."""
  batch, num_kv_heads, rows, head_dim = out.shape
  groups = num_heads // num_kv_heads
  out = out.reshape(batch, num_kv_heads, groups, rows // groups, head_dim).transpose(0, 3, 1, 2, 4)
  return out.reshape(batch, rows // groups, num_heads, head_dim)


def _masked_attention(query, key, value, mask, precision):
  """query [B, Sq, H, hd]; key, value [B, KV, Sk, hd] (heads major); mask [B, Sq, Sk] -> [B, Sq, H, hd]."""
  num_heads, num_kv_heads = query.shape[2], key.shape[1]
  tile = _attention_tile(_stack_query_heads(query, num_kv_heads), key, value, mask, num_heads // num_kv_heads,
                         precision)
  return _unstack_query_heads(_combine_tiles([tile]).astype(value.dtype), num_heads)
