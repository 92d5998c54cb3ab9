"""The blocked attention paths (many query and key blocks, skipped tiles, padding) against a plain numpy softmax
attention. The model parity tests use sequences shorter than one block, so these paths are only covered here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vrrl_jax.models import attention


def numpy_attention(query, key, value, segment_ids, causal):
  """softmax(q k^T / sqrt(hd)) v per head, keys restricted to the query's segment (and to earlier positions)."""
  batch, length, heads, head_dim = query.shape
  groups = heads // key.shape[2]
  out = np.zeros_like(query, dtype=np.float64)
  for b in range(batch):
    for h in range(heads):
      logits = query[b, :, h].astype(np.float64) @ key[b, :, h // groups].astype(np.float64).T / np.sqrt(head_dim)
      allowed = segment_ids[b][:, None] == segment_ids[b][None, :]
      if causal:
        allowed &= np.tril(np.ones((length, length), bool))
      logits = np.where(allowed, logits, -np.inf)
      weights = np.exp(logits - logits.max(axis=1, keepdims=True))
      weights /= weights.sum(axis=1, keepdims=True)
      out[b, :, h] = weights @ value[b, :, h // groups].astype(np.float64)
  return out


def random_qkv(rng, batch, length, heads=4, kv_heads=2, head_dim=8):
  q = rng.standard_normal((batch, length, heads, head_dim)).astype(np.float32)
  k = rng.standard_normal((batch, length, kv_heads, head_dim)).astype(np.float32)
  v = rng.standard_normal((batch, length, kv_heads, head_dim)).astype(np.float32)
  return q, k, v


@pytest.mark.parametrize("length", [50, 64, 77])
def test_bidirectional_frames_many_blocks(length):
  """Images as contiguous segments of different sizes (the vision tower's frames), block size 16: tiles between
  different images are skipped, a partial last block is padded."""
  rng = np.random.default_rng(length)
  q, k, v = random_qkv(rng, 1, length)
  cuts = np.sort(rng.choice(np.arange(1, length), size=3, replace=False))
  segments = np.searchsorted(cuts, np.arange(length), side="right")[None].astype(np.int32)
  out = attention.self_attention(q, k, v, segments, causal=False, block_size=16)
  np.testing.assert_allclose(np.asarray(out), numpy_attention(q, k, v, segments, False), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", ["right", "left"])
def test_causal_padded_rows_many_blocks(padding):
  """Causal text rows with padding (segment 0) on either side, several rows, block size 8."""
  rng = np.random.default_rng(1)
  batch, length = 3, 45
  q, k, v = random_qkv(rng, batch, length)
  segments = np.ones((batch, length), np.int32)
  for b, n in enumerate([45, 30, 9]):
    if padding == "right":
      segments[b, n:] = 0
    else:
      segments[b, : length - n] = 0
  out = np.asarray(attention.self_attention(q, k, v, segments, causal=True, block_size=8))
  expected = numpy_attention(q, k, v, segments, True)
  real = segments > 0
  np.testing.assert_allclose(out[real], expected[real], rtol=1e-5, atol=1e-5)
  assert np.all(np.isfinite(out))


def test_non_contiguous_segments_are_still_exact():
  """Segments that interleave (not runs) make the block-range test conservative, never wrong."""
  rng = np.random.default_rng(2)
  q, k, v = random_qkv(rng, 2, 40)
  segments = rng.integers(0, 3, size=(2, 40)).astype(np.int32)
  out = attention.self_attention(q, k, v, segments, causal=False, block_size=8)
  np.testing.assert_allclose(np.asarray(out), numpy_attention(q, k, v, segments, False), rtol=1e-5, atol=1e-5)


def test_gradients_match_plain_softmax_attention():
  """Gradients through the blocked loops equal those of a plain jnp softmax attention written here."""
  rng = np.random.default_rng(3)
  q, k, v = random_qkv(rng, 2, 33)
  segments = np.ones((2, 33), np.int32)
  segments[1, 20:] = 2
  weights = np.linspace(-1, 1, q.size).reshape(q.shape)
  allowed = (segments[:, :, None] == segments[:, None, :]) & np.tril(np.ones((33, 33), bool))[None]

  def plain(q, k, v):  # [B, S, H, hd]; query head h reads KV head h // 2
    k, v = jnp.repeat(k, 2, axis=2), jnp.repeat(v, 2, axis=2)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    probs = jax.nn.softmax(jnp.where(allowed[:, None], logits, -jnp.inf), axis=-1)
    return (jnp.einsum("bhqk,bkhd->bqhd", probs, v) * weights).sum()

  def blocked(q, k, v):
    return (attention.self_attention(q, k, v, segments, causal=True, block_size=8) * weights).sum()

  got = jax.grad(blocked, argnums=(0, 1, 2))(q, k, v)
  expected = jax.grad(plain, argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(got, expected):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
