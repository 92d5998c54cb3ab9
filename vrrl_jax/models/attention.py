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


import jax
import jax.numpy as jnp

# Large but finite: a fully masked row (left-padding query) gives a uniform softmax instead of NaN.
_MASKED_LOGIT = -1e30
# Segment id of the padding `local_attention` adds; callers' segment ids must differ from it.
_PAD_SEGMENT = jnp.iinfo(jnp.int32).min


def dot_product_attention(
  query: jax.Array,
  key: jax.Array,
  value: jax.Array,
  *,
  query_segment_ids: jax.Array,
  kv_segment_ids: jax.Array,
  query_positions: jax.Array | None = None,
  kv_positions: jax.Array | None = None,
  impl: str = "xla",
  precision=None,
) -> jax.Array:
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


def self_attention(
  query: jax.Array,
  key: jax.Array,
  value: jax.Array,
  segment_ids: jax.Array,
  *,
  causal: bool,
  block_size: int = 256,
  impl: str = "xla",
  precision=None,
) -> jax.Array:
  """`dot_product_attention` of a sequence against itself (query_segment_ids = kv_segment_ids = segment_ids,
  positions = arange(S) when causal), in (query block, key block) tiles of `block_size`.

  Query blocks run under lax.map and key blocks under a fori_loop, so the program's size does not grow with the
  sequence (an unrolled tile grid took minutes to compile at a few thousand vision patches). A tile is skipped at
  run time when causality or the segments rule it out: a key block is read only if its range of segment ids
  overlaps the query block's (exact for contiguous segments such as frames, conservative otherwise). Tiles are
  combined with an online softmax, so the [heads, queries, keys] temporaries stay one tile in size.
  """
  _check_impl(impl)
  batch, length, num_heads, head_dim = query.shape
  num_kv_heads = key.shape[2]
  groups = num_heads // num_kv_heads
  if length <= block_size:
    mask = segment_ids[:, :, None] == segment_ids[:, None, :]
    if causal:
      mask &= jnp.tril(jnp.ones((length, length), bool))[None]
    return _masked_attention(query, _heads_major(key), _heads_major(value), mask, precision)

  num_blocks = -(-length // block_size)
  pad = num_blocks * block_size - length
  pad_seq = lambda x, fill=0: jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2), constant_values=fill)
  # Padding queries get a segment of their own: they see only padding keys (finite output, sliced off).
  segments = pad_seq(segment_ids, _PAD_SEGMENT).reshape(batch, num_blocks, block_size)
  key, value = _heads_major(pad_seq(key)), _heads_major(pad_seq(value))  # [B, KV, S', hd]
  query_blocks = _stack_query_heads(pad_seq(query), num_kv_heads)  # [B, KV, G * S', hd], head-major per block
  query_blocks = query_blocks.reshape(batch, num_kv_heads, groups, num_blocks, block_size, head_dim)
  query_blocks = query_blocks.transpose(3, 0, 1, 2, 4, 5).reshape(
    num_blocks, batch, num_kv_heads, groups * block_size, head_dim
  )

  low, high = segments.min(axis=-1), segments.max(axis=-1)  # [B, blocks]
  needed = jnp.any((low[:, :, None] <= high[:, None, :]) & (low[:, None, :] <= high[:, :, None]), axis=0)
  index = jnp.arange(num_blocks)
  if causal:
    needed &= index[None, :] <= index[:, None]
  offsets = jnp.arange(block_size, dtype=jnp.int32)

  def query_block(args):
    i, q_block = args
    q_segments = jax.lax.dynamic_index_in_dim(segments, i, axis=1, keepdims=False)  # [B, block]

    def key_block(j, carry):
      def compute(carry):
        out, row_max, row_sum = carry
        k_start = j * block_size
        k_block = jax.lax.dynamic_slice_in_dim(key, k_start, block_size, axis=2)
        v_block = jax.lax.dynamic_slice_in_dim(value, k_start, block_size, axis=2)
        k_segments = jax.lax.dynamic_index_in_dim(segments, j, axis=1, keepdims=False)
        mask = q_segments[:, :, None] == k_segments[:, None, :]
        if causal:
          mask &= (k_start + offsets)[None, None, :] <= (i * block_size + offsets)[None, :, None]
        tile_out, tile_max, tile_sum = _attention_tile(q_block, k_block, v_block, mask, groups, precision)
        new_max = jnp.maximum(row_max, tile_max)
        old_weight, tile_weight = jnp.exp(row_max - new_max), jnp.exp(tile_max - new_max)
        return (
          out * old_weight[..., None] + tile_out * tile_weight[..., None],
          new_max,
          row_sum * old_weight + tile_sum * tile_weight,
        )

      return jax.lax.cond(needed[i, j], compute, lambda carry: carry, carry)

    init = _empty_tile(q_block)
    out, _, row_sum = jax.lax.fori_loop(0, num_blocks, key_block, init)
    return (out / row_sum[..., None]).astype(value.dtype)

  out = jax.lax.map(query_block, (index, query_blocks))  # [blocks, B, KV, G * block, hd]
  out = out.reshape(num_blocks, batch, num_kv_heads, groups, block_size, head_dim).transpose(1, 2, 3, 0, 4, 5)
  out = out.reshape(batch, num_kv_heads, groups * num_blocks * block_size, head_dim)
  return _unstack_query_heads(out, num_heads)[:, :length]


def _empty_tile(query):
  """The online softmax's starting state (no key seen yet): it gets weight 0 once a real key is combined in."""
  return (
    jnp.zeros(query.shape, jnp.float32),
    jnp.full(query.shape[:-1], _MASKED_LOGIT, jnp.float32),
    jnp.zeros(query.shape[:-1], jnp.float32),
  )


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
  out = jnp.einsum(
    "bkqs,bksd->bkqd", probs.astype(value.dtype), value, precision=precision, preferred_element_type=jnp.float32
  )
  return out, row_max, row_sum


def local_attention(
  query: jax.Array,
  key: jax.Array,
  value: jax.Array,
  segment_ids: jax.Array,
  *,
  chunk: int,
  impl: str = "xla",
  precision=None,
) -> jax.Array:
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
    (batch * num_chunks, 3 * chunk) + x.shape[3:]
  )
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
  out, _, row_sum = _attention_tile(
    _stack_query_heads(query, num_kv_heads), key, value, mask, num_heads // num_kv_heads, precision
  )
  return _unstack_query_heads((out / row_sum[..., None]).astype(value.dtype), num_heads)
