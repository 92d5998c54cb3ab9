"""Qwen3-VL vision tower with static, bucketed shapes.

Host side (numpy): the images of a batch are packed into one sequence of patches in the processor's merge-block
order, padded to a bucket; each patch gets its frame's segment id (-1 for padding), its (row, col) for the 2D rotary
and the 4 taps and weights that resample the learned square position table to its image's grid (bilinear,
align_corners=True, as transformers' `get_vision_interpolation_indices_and_weights`).

Device side (Linen): patch embedding (a matmul, with bias) plus the resampled position embedding, pre-norm
LayerNorm blocks (2D-rotary attention over whole frames, a GELU-tanh MLP), the 2x2 patch merger, and the DeepStack
mergers applied to the outputs of the listed blocks. Under ``scan_layers`` the blocks are one scan; the DeepStack
blocks' outputs are written into a carried buffer, so the program does not grow with depth.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from vrrl_jax.models import rope
from vrrl_jax.models.layers import KERNEL_INIT, dense
from vrrl_jax.models.qwen3_vl.config import Qwen3VLConfig, VisionConfig
from vrrl_jax.models.vision import PAD_SEGMENT, VisionAttention, checked_vision_arrays, merge_block_positions, round_up


@flax.struct.dataclass
class VisionInputs:
  """Prepared, padded vision inputs: N = padded patch count, M = N / merge_unit merged tokens."""

  pixel_values: jax.Array  # [N, C*T*P*P] in merge-block order
  patch_positions: jax.Array  # [N, 2] int32 (row, col)
  frame_segment_ids: jax.Array  # [N] int32: image frame of each patch, -1 for padding
  position_taps: jax.Array  # [N, 4] int32: rows of the learned position table
  position_weights: jax.Array  # [N, 4] float32: their bilinear weights (0 for padding)


def _axis_taps(index: np.ndarray, size: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
  """Bilinear taps (floor, floor + 1, clamped) into a ``side``-long table and their weights, align_corners=True."""
  src = index.astype(np.float32) * np.float32(side - 1) / np.maximum(size - 1, 1).astype(np.float32)
  floor = np.floor(src)
  offsets = np.arange(2)
  taps = np.clip(floor.astype(np.int64)[:, None] + offsets, 0, side - 1)
  weights = np.maximum(np.float32(0), np.float32(1) - np.abs(src[:, None] - floor[:, None] - offsets))
  return taps, weights.astype(np.float32)


def position_interpolation(image_grid_thw: np.ndarray, side: int, merge: int) -> tuple[np.ndarray, np.ndarray]:
  """Per patch (merge-block order, every frame) the 4 table rows and weights of the resampled position embedding,
  taps ordered (h0, w0), (h0, w1), (h1, w0), (h1, w1)."""
  taps, weights = [], []
  for t, h, w in np.asarray(image_grid_thw).tolist():
    rows, cols = merge_block_positions(np.array([[1, h, w]]), merge).T
    h_taps, h_weights = _axis_taps(rows, np.int64(h), side)
    w_taps, w_weights = _axis_taps(cols, np.int64(w), side)
    taps.append(np.tile((h_taps[:, :, None] * side + w_taps[:, None, :]).reshape(-1, 4), (t, 1)))
    weights.append(np.tile((h_weights[:, :, None] * w_weights[:, None, :]).reshape(-1, 4), (t, 1)))
  return np.concatenate(taps), np.concatenate(weights)


def prepare_vision_inputs(
  pixel_values: np.ndarray,
  image_grid_thw: np.ndarray,
  vision: VisionConfig,
  patch_multiple: int = 256,
  max_frame_patches: int | None = None,
) -> VisionInputs:
  """Packs the processor's `pixel_values` / `image_grid_thw` into static-shape VisionInputs (padded to a multiple
  of `patch_multiple` patches, so batches of the same bucket share one compiled program)."""
  pixel_values, grid, num_patches = checked_vision_arrays(
    pixel_values, image_grid_thw, vision, patch_multiple, max_frame_patches
  )
  merge = vision.spatial_merge_size
  frame_sizes = np.repeat(grid[:, 1] * grid[:, 2], grid[:, 0])
  frame_ids = np.repeat(np.arange(len(frame_sizes)), frame_sizes)
  taps, weights = position_interpolation(grid, vision.position_side, merge)
  padded = round_up(num_patches, patch_multiple)
  extra = padded - num_patches
  return VisionInputs(
    pixel_values=np.concatenate([pixel_values, np.zeros((extra, vision.patch_dim), np.float32)]),
    patch_positions=np.concatenate([merge_block_positions(grid, merge), np.zeros((extra, 2), np.int64)]).astype(
      np.int32
    ),
    frame_segment_ids=np.concatenate([frame_ids, np.full((extra,), PAD_SEGMENT)]).astype(np.int32),
    position_taps=np.concatenate([taps, np.zeros((extra, 4), np.int64)]).astype(np.int32),
    position_weights=np.concatenate([weights, np.zeros((extra, 4), np.float32)]).astype(np.float32),
  )


def layer_norm(name: str, cfg: Qwen3VLConfig, axis: str = "norm") -> nn.LayerNorm:
  """torch's LayerNorm: eps 1e-6, two-pass variance, with bias."""
  return nn.LayerNorm(
    epsilon=1e-6,
    use_fast_variance=False,
    dtype=cfg.compute_dtype,
    param_dtype=cfg.weight_dtype,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones, (axis,)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axis,)),
    name=name,
  )


class VisionBlock(nn.Module):
  """Pre-norm block: x + attn(LN1(x)) over whole frames, then x + fc2(gelu_tanh(fc1(LN2(x))))."""

  config: Qwen3VLConfig

  @nn.compact
  def __call__(self, x, block_inputs):
    cfg, vision = self.config, self.config.vision
    cos, sin, frame_segment_ids = block_inputs
    kw = dict(use_bias=True, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, precision=cfg.matmul_precision)
    x = x + VisionAttention(cfg, name="attn")(layer_norm("norm1", cfg)(x), True, None, frame_segment_ids, cos, sin)
    h = dense(vision.intermediate_size, ("vision_embed", "vision_mlp"), name="linear_fc1", **kw)(
      layer_norm("norm2", cfg)(x)
    )
    return x + dense(vision.hidden_size, ("vision_mlp", "vision_embed"), name="linear_fc2", **kw)(
      nn.gelu(h, approximate=True)
    )


class PatchMerger(nn.Module):
  """2x2 merge: LayerNorm per patch (or, post-shuffle, over the concatenated 4 patches), Linear, exact GELU,
  Linear."""

  config: Qwen3VLConfig
  postshuffle_norm: bool

  @nn.compact
  def __call__(self, x):
    cfg, vision = self.config, self.config.vision
    kw = dict(use_bias=True, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, precision=cfg.matmul_precision)
    merged_dim = vision.hidden_size * vision.merge_unit
    if self.postshuffle_norm:
      x = layer_norm("norm", cfg, "vision_merge")(x.reshape(-1, merged_dim))
    else:
      x = layer_norm("norm", cfg)(x).reshape(-1, merged_dim)
    x = dense(merged_dim, ("vision_merge", "vision_mlp"), name="linear_fc1", **kw)(x)
    return dense(vision.out_hidden_size, ("vision_mlp", "embed"), name="linear_fc2", **kw)(
      nn.gelu(x, approximate=False)
    )


class ScannedBlock(nn.Module):
  """A block under nn.scan: carries (x, DeepStack buffer) and writes x into buffer slot ``slot`` (>= 0)."""

  config: Qwen3VLConfig

  @nn.compact
  def __call__(self, carry, slot, block_inputs):
    x, buffer = carry
    x = VisionBlock(self.config, name="block")(x, block_inputs)
    written = buffer.at[jnp.maximum(slot, 0)].set(x)
    return (x, jnp.where(slot >= 0, written, buffer)), None


class VisionTower(nn.Module):
  config: Qwen3VLConfig

  @nn.compact
  def __call__(self, inputs: VisionInputs) -> tuple[jax.Array, jax.Array]:
    """(merged features [M, out_hidden], DeepStack features [len(deepstack_visual_indexes), M, out_hidden]) in the
    processor's order (rows past the real tokens are padding)."""
    cfg, vision = self.config, self.config.vision
    kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, precision=cfg.matmul_precision)
    x = dense(vision.hidden_size, ("vision_patch", "vision_embed"), use_bias=True, name="patch_embed", **kw)(
      inputs.pixel_values.astype(cfg.compute_dtype)
    )
    table = self.param(
      "pos_embed",
      nn.with_logical_partitioning(KERNEL_INIT, (None, "vision_embed")),
      (vision.num_position_embeddings, vision.hidden_size),
      cfg.weight_dtype,
    )
    positions = jnp.einsum("nk,nkd->nd", inputs.position_weights, table[inputs.position_taps].astype(jnp.float32))
    x = x + positions.astype(x.dtype)
    cos, sin = rope.vision_cos_sin(inputs.patch_positions, vision.head_dim, vision.rope_theta)
    block_inputs = (cos, sin, inputs.frame_segment_ids)
    deep_indexes = vision.deepstack_visual_indexes
    if cfg.scan_layers:
      block_cls = ScannedBlock
      if cfg.remat_policy is not None:
        block_cls = nn.remat(block_cls, policy=cfg.remat_policy_fn, prevent_cse=False)
      slots = np.full((vision.depth,), -1, np.int32)
      for j, i in enumerate(deep_indexes):
        slots[i] = j
      blocks = nn.scan(
        block_cls,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=(0, nn.broadcast),
        length=vision.depth,
        metadata_params={nn.PARTITION_NAME: "layers"},
      )(cfg, name="blocks")
      buffer = jnp.zeros((max(len(deep_indexes), 1),) + x.shape, x.dtype)
      (x, buffer), _ = blocks((x, buffer), jnp.asarray(slots), block_inputs)
      taps = [buffer[j] for j in range(len(deep_indexes))]
    else:
      block_cls = VisionBlock
      if cfg.remat_policy is not None:
        block_cls = nn.remat(block_cls, policy=cfg.remat_policy_fn)
      taps = [None] * len(deep_indexes)
      for i in range(vision.depth):
        x = block_cls(cfg, name=f"blocks_{i}")(x, block_inputs)
        if i in deep_indexes:
          taps[deep_indexes.index(i)] = x
    merged = PatchMerger(cfg, postshuffle_norm=False, name="merger")(x)
    deep = [
      PatchMerger(cfg, postshuffle_norm=True, name=f"deepstack_merger_list_{j}")(tap) for j, tap in enumerate(taps)
    ]
    deep = jnp.stack(deep) if deep else jnp.zeros((0,) + merged.shape, merged.dtype)
    return merged, deep
