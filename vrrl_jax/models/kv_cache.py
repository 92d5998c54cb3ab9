"""KV cache for prefill / append / decode.

One pytree for all layers: key, value [layers, batch, max_len, kv_heads, head_dim] (RoPE already applied to keys),
per-slot segment ids (1 = real token, 0 = padding or never written) and per-row lengths (next write slot).
A chunk of S tokens is written at slots lengths[b] .. lengths[b] + S - 1 of its own row; the row then advances
to just past its last real token of the chunk, so right-padded chunks stay compact (the padding is overwritten by
the next write) and left-padded prompts keep their padding as masked slots. Callers must keep
lengths + S <= max_len: writes past the end are dropped.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class KVCache:
  key: jax.Array  # [layers, B, max_len, KV, hd]
  value: jax.Array  # [layers, B, max_len, KV, hd]
  segment_ids: jax.Array  # [B, max_len] int32
  lengths: jax.Array  # [B] int32

  @property
  def max_len(self) -> int:
    return self.key.shape[2]


def init_cache(num_layers: int, batch: int, max_len: int, num_kv_heads: int, head_dim: int, dtype) -> KVCache:
  shape = (num_layers, batch, max_len, num_kv_heads, head_dim)
  return KVCache(
    key=jnp.zeros(shape, dtype),
    value=jnp.zeros(shape, dtype),
    segment_ids=jnp.zeros((batch, max_len), jnp.int32),
    lengths=jnp.zeros((batch,), jnp.int32),
  )


def chunk_slots(lengths: jax.Array, chunk_len: int) -> jax.Array:
  """Cache slots [B, S] that a chunk of `chunk_len` tokens is written to."""
  return lengths[:, None] + jnp.arange(chunk_len, dtype=jnp.int32)[None, :]


def write_rows(array: jax.Array, slots: jax.Array, chunk: jax.Array) -> jax.Array:
  """array[b, slots[b, j]] = chunk[b, j]; array [B, L, ...], chunk [B, S, ...]. Out-of-range slots are dropped."""
  rows = jnp.arange(array.shape[0])[:, None]
  return array.at[rows, slots].set(chunk.astype(array.dtype), mode="drop")


def write_layer(array: jax.Array, layer: jax.Array, slots: jax.Array, chunk: jax.Array) -> jax.Array:
  """array[layer, b, slots[b, j]] = chunk[b, j] for a stacked [layers, B, L, ...] array (in place under jit)."""
  rows = jnp.arange(array.shape[1])[:, None]
  return array.at[layer, rows, slots].set(chunk.astype(array.dtype), mode="drop")


def advanced_lengths(lengths: jax.Array, chunk_segment_ids: jax.Array) -> jax.Array:
  """Each row moves to just past its last real token in the chunk (a chunk with none leaves the row as is)."""
  chunk_len = chunk_segment_ids.shape[1]
  last_real = jnp.max(jnp.where(chunk_segment_ids > 0, jnp.arange(1, chunk_len + 1), 0), axis=1)
  return lengths + last_real.astype(lengths.dtype)
