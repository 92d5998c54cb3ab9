"""Rotary embeddings: text M-RoPE (3 position axes, chunked or interleaved sections), vision 2D axial RoPE, and the host-side
`get_rope_index` that assigns the (T, H, W) positions of text and image tokens."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np


def inv_freq(dim: int, theta: float) -> np.ndarray:
  """`1 / theta**(arange(0, dim, 2) / dim)` in float32, as transformers computes it."""
  exponent = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
  return (np.float32(1.0) / (np.float32(theta) ** exponent)).astype(np.float32)


def rotate_half(x: jax.Array) -> jax.Array:
  half = x.shape[-1] // 2
  return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """NeoX-style (rotate_half) rotation. x: [..., S, heads, hd]; cos, sin: [..., S, hd]."""
  return x * cos[..., None, :] + rotate_half(x) * sin[..., None, :]


def mrope_axes(mrope_section, head_dim: int, interleaved: bool = False) -> np.ndarray:
  """The position axis (0 T, 1 H, 2 W) that feeds each of the head_dim / 2 rotary frequencies.

  Chunked (Qwen2.5-VL): the first mrope_section[0] frequencies from T, the next mrope_section[1] from H, the rest
  from W. Interleaved (Qwen3-VL's `recomposition_frequencies`): T everywhere, then H at 1, 4, ... below
  3 * mrope_section[1] and W at 2, 5, ... below 3 * mrope_section[2] (T H W T H W ... T T).
  """
  if not interleaved:
    axes = np.repeat(np.arange(3), mrope_section)
    if axes.shape[0] != head_dim // 2:
      raise ValueError(f"sum(mrope_section)={axes.shape[0]} must equal head_dim/2={head_dim // 2}")
    return axes
  axes = np.zeros((head_dim // 2,), np.int64)
  axes[1 : 3 * mrope_section[1] : 3] = 1
  axes[2 : 3 * mrope_section[2] : 3] = 2
  return axes


def mrope_cos_sin(positions: jax.Array, head_dim: int, theta: float, mrope_section, dtype, interleaved: bool = False):
  """M-RoPE tables for positions [3, B, S] -> cos, sin [B, S, head_dim] in `dtype`; frequency i takes its angle
  from axis `mrope_axes(...)[i]`."""
  section_axis = mrope_axes(mrope_section, head_dim, interleaved)  # [head_dim / 2]
  per_freq_positions = jnp.moveaxis(positions[section_axis], 0, -1).astype(jnp.float32)  # [B, S, hd/2]
  angles = per_freq_positions * inv_freq(head_dim, theta)
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)


def vision_cos_sin(patch_positions: jax.Array, head_dim: int, theta: float):
  """2D axial tables for patch positions [N, 2] (row, col) -> cos, sin [N, head_dim] in float32.

  Layout per half: [row frequencies | col frequencies], each with head_dim/4 entries.
  """
  freqs = inv_freq(head_dim // 2, theta)
  positions = patch_positions.astype(jnp.float32)
  angles = jnp.concatenate([positions[:, :1] * freqs, positions[:, 1:] * freqs], axis=-1)
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def get_rope_index(
  input_ids: np.ndarray,
  mm_token_type_ids: np.ndarray,
  image_grid_thw: np.ndarray | None,
  attention_mask: np.ndarray | None,
  spatial_merge_size: int,
) -> tuple[np.ndarray, np.ndarray]:
  """M-RoPE positions [3, B, S] and rope_deltas [B] (transformers 5.x `Qwen2_5_VLModel.get_rope_index`).

  Per row, over the unmasked tokens only: a text run of length L takes `cur + arange(L)` on all three axes;
  an image run takes the next grid (global over the batch) and gets (cur + t, cur + h, cur + w) in raster order,
  then `cur += max(h, w) // merge`. Padded positions stay 0. rope_delta = max position + 1 - n_valid, so the
  next decoded token of row b sits at `n_valid[b] + rope_delta[b]` (= max position + 1).
  """
  input_ids = np.asarray(input_ids)
  token_types = np.asarray(mm_token_type_ids)
  batch, length = input_ids.shape
  if token_types.shape != input_ids.shape:
    raise ValueError(f"mm_token_type_ids shape {token_types.shape} != input_ids shape {input_ids.shape}")
  if np.any(token_types == 2):
    raise ValueError("video tokens (mm_token_type_ids == 2) are not supported")
  mask = np.ones_like(input_ids, bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
  grids = iter(np.zeros((0, 3), np.int64) if image_grid_thw is None else np.asarray(image_grid_thw))
  positions = np.zeros((3, batch, length), np.int64)
  deltas = np.zeros((batch,), np.int64)
  for row in range(batch):
    row_types = token_types[row][mask[row]]
    pieces, cur = [], 0
    for kind, run in itertools.groupby(row_types.tolist()):
      run_length = len(list(run))
      if kind == 0:
        pieces.append(np.broadcast_to(cur + np.arange(run_length), (3, run_length)))
        cur += run_length
        continue
      grid = next(grids, None)
      if grid is None:
        raise ValueError(f"row {row} has more image-token runs than image_grid_thw has grids")
      t, h, w = (int(v) for v in grid)
      gh, gw = h // spatial_merge_size, w // spatial_merge_size
      if run_length != t * gh * gw:
        raise ValueError(f"row {row}: image run of {run_length} tokens but grid {(t, h, w)} needs {t * gh * gw}")
      tt, hh, ww = np.meshgrid(np.arange(t), np.arange(gh), np.arange(gw), indexing="ij")
      pieces.append(cur + np.stack([tt.ravel(), hh.ravel(), ww.ravel()]))
      cur += max(h, w) // spatial_merge_size
    row_positions = np.concatenate(pieces, axis=1) if pieces else np.zeros((3, 0), np.int64)
    positions[:, row, mask[row]] = row_positions
    deltas[row] = (row_positions.max() + 1 if row_positions.size else 0) - row_positions.shape[1]
  if next(grids, None) is not None:
    raise ValueError("image_grid_thw has more grids than there are image-token runs in input_ids")
  return positions.astype(np.int32), deltas.astype(np.int32)
