"""Qwen2.5-VL vision tower with static, bucketed shapes.

Host side (numpy): all images of a batch are packed into one sequence of patches. `prepare_vision_inputs`
computes the window-attention permutation, per-patch window and frame segment ids and the 2D rotary positions,
and pads the patch count to a bucket, so images of different sizes share one compiled program. Padding patches
get segment id -1: they only see each other and never touch real patches.

Device side (Linen): patch embedding as a matmul, pre-norm blocks (RMSNorm, 2D-rotary attention restricted to a
window or to a frame by segment ids, gated SiLU MLP with bias), and the 2x2 patch merger. The output is one
LLM-sized feature per merged token, in the raster order of `image_grid_thw` (transformers' `pooler_output`).
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from vrrl_jax.models import attention as attention_lib
from vrrl_jax.models import rope
from vrrl_jax.models.config import Qwen25VLConfig, VisionConfig
from vrrl_jax.models.layers import GatedMlp, RMSNorm, dense

PAD_SEGMENT = -1


@flax.struct.dataclass
class VisionInputs:
  """Prepared, padded vision inputs: N = padded patch count, M = N / merge_unit merged tokens."""

  pixel_values: jax.Array  # [N, C*T*P*P] rows in transformers' merge-block order
  patch_order: jax.Array  # [N] int32: pixel row placed at each slot of the window-ordered sequence
  patch_positions: jax.Array  # [N, 2] int32: (row, col) of each window-ordered patch
  window_segment_ids: jax.Array  # [N] int32: window of each window-ordered patch, -1 for padding
  frame_segment_ids: jax.Array  # [N] int32: image frame of each window-ordered patch, -1 for padding
  token_order: jax.Array  # [M] int32: window-ordered merged token holding each raster-ordered token

  @property
  def num_tokens(self) -> int:
    return self.token_order.shape[0]


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def window_patches(vision: VisionConfig) -> int:
  """Most patches in one attention window (a full window of window_merged^2 merged tokens)."""
  return vision.window_merged**2 * vision.merge_unit


def merge_block_positions(image_grid_thw: np.ndarray, merge: int) -> np.ndarray:
  """(row, col) of every patch [N, 2] in merge-block order, repeated for each frame."""
  positions = []
  for t, h, w in np.asarray(image_grid_thw).tolist():
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    block = lambda a: a.reshape(h // merge, merge, w // merge, merge).transpose(0, 2, 1, 3).ravel()
    positions.append(np.tile(np.stack([block(rows), block(cols)], axis=-1), (t, 1)))
  return np.concatenate(positions, axis=0)


def window_index(image_grid_thw: np.ndarray, vision: VisionConfig) -> tuple[np.ndarray, np.ndarray]:
  """Merged-token permutation into window order [M] and the window id of each window-ordered token [M].

  Windows are `window_merged` x `window_merged` merged tokens, tiled from the top-left of each frame; windows at
  the bottom/right edges are partial. Windows never cross frames or images.
  """
  merge, side = vision.spatial_merge_size, vision.window_merged
  order, window_ids, offset, next_window = [], [], 0, 0
  for t, h, w in np.asarray(image_grid_thw).tolist():
    gh, gw = h // merge, w // merge
    nh, nw = -(-gh // side), -(-gw // side)
    index = np.full((t, nh * side, nw * side), -1, np.int64)
    index[:, :gh, :gw] = np.arange(t * gh * gw).reshape(t, gh, gw)
    windows = index.reshape(t, nh, side, nw, side).transpose(0, 1, 3, 2, 4).reshape(t * nh * nw, side * side)
    for window in windows:
      members = window[window >= 0]
      order.append(members + offset)
      window_ids.append(np.full(members.shape, next_window))
      next_window += 1
    offset += t * gh * gw
  return np.concatenate(order), np.concatenate(window_ids)


def checked_vision_arrays(
  pixel_values, image_grid_thw, vision, patch_multiple: int, max_frame_patches: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
  """(pixel_values float32, image_grid_thw [n, 3] int64, patch count) after checking them against the vision config
  (either family's) and the padding multiple; a clear ValueError otherwise."""
  pixel_values = np.asarray(pixel_values, np.float32)
  grid = np.asarray(image_grid_thw, np.int64).reshape(-1, 3)
  unit, merge = vision.merge_unit, vision.spatial_merge_size
  if patch_multiple <= 0 or patch_multiple % unit:
    raise ValueError(f"patch_multiple={patch_multiple} must be a positive multiple of {unit} (merge unit)")
  if grid.shape[0] == 0 or np.any(grid <= 0):
    raise ValueError(f"image_grid_thw must hold positive (t, h, w) rows, got {grid.tolist()}")
  if np.any(grid[:, 1:] % merge):
    raise ValueError(f"grid h and w must be multiples of spatial_merge_size={merge}, got {grid.tolist()}")
  num_patches = int(np.prod(grid, axis=1).sum())
  if max_frame_patches is not None and np.any(grid[:, 1] * grid[:, 2] > max_frame_patches):
    raise ValueError(
      f"an image frame has {int(np.max(grid[:, 1] * grid[:, 2]))} patches, more than the model's "
      f"max_frame_patches={max_frame_patches} (image_grid_thw {grid.tolist()}); resize the images "
      "(image processor max_pixels) or raise max_frame_patches"
    )
  if pixel_values.shape != (num_patches, vision.patch_dim):
    raise ValueError(
      f"pixel_values shape {pixel_values.shape} does not match image_grid_thw "
      f"({num_patches} patches of {vision.patch_dim} values)"
    )
  return pixel_values, grid, num_patches


def prepare_vision_inputs(
  pixel_values: np.ndarray,
  image_grid_thw: np.ndarray,
  vision: VisionConfig,
  patch_multiple: int = 256,
  max_frame_patches: int | None = None,
) -> VisionInputs:
  """Packs the processor's `pixel_values` / `image_grid_thw` into static-shape VisionInputs.

  The patch count is padded up to a multiple of `patch_multiple` (itself a multiple of merge_unit), so every batch
  whose images total the same bucket reuses one compiled program. `max_frame_patches` (the model config's) is
  checked here: the banded full attention would silently drop keys of a larger frame.
  """
  pixel_values, grid, num_patches = checked_vision_arrays(
    pixel_values, image_grid_thw, vision, patch_multiple, max_frame_patches
  )
  unit, merge = vision.merge_unit, vision.spatial_merge_size

  token_window_order, token_window_ids = window_index(grid, vision)
  num_tokens = num_patches // unit
  frame_sizes = np.repeat(grid[:, 1] * grid[:, 2] // unit, grid[:, 0])  # merged tokens per frame
  token_frame_ids = np.repeat(np.arange(len(frame_sizes)), frame_sizes)

  within = np.arange(unit)
  patch_order = (token_window_order[:, None] * unit + within).ravel()
  padded = round_up(num_patches, patch_multiple)
  extra = padded - num_patches
  pad_segments = np.full((extra,), PAD_SEGMENT)
  return VisionInputs(
    pixel_values=np.concatenate([pixel_values, np.zeros((extra, vision.patch_dim), np.float32)]),
    patch_order=np.concatenate([patch_order, np.arange(num_patches, padded)]).astype(np.int32),
    patch_positions=np.concatenate(
      [merge_block_positions(grid, merge)[patch_order], np.zeros((extra, 2), np.int64)]
    ).astype(np.int32),
    window_segment_ids=np.concatenate([np.repeat(token_window_ids, unit), pad_segments]).astype(np.int32),
    frame_segment_ids=np.concatenate([np.repeat(token_frame_ids[token_window_order], unit), pad_segments]).astype(
      np.int32
    ),
    token_order=np.concatenate([np.argsort(token_window_order), np.arange(num_tokens, padded // unit)]).astype(
      np.int32
    ),
  )


class VisionAttention(nn.Module):
  config: Qwen25VLConfig

  @nn.compact
  def __call__(self, x, is_full_attention, window_segment_ids, frame_segment_ids, cos, sin):
    """`is_full_attention`: a Python bool, or a traced one under nn.scan (then both kinds are compiled)."""
    cfg, vision = self.config, self.config.vision
    kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, precision=cfg.matmul_precision)
    qkv = dense(
      (3, vision.num_heads, vision.head_dim),
      ("vision_embed", None, "vision_heads", "head_dim"),
      use_bias=True,
      name="qkv",
      **kw,
    )(x)  # [N, 3, H, hd]
    # Rotary in float32, as transformers does.
    query = rope.apply_rotary(qkv[:, 0].astype(jnp.float32), cos, sin).astype(cfg.compute_dtype)[None]
    key = rope.apply_rotary(qkv[:, 1].astype(jnp.float32), cos, sin).astype(cfg.compute_dtype)[None]
    value = qkv[None, :, 2]
    attn_kw = dict(impl=cfg.attention_impl, precision=cfg.matmul_precision)

    def frame_attention():  # whole frames
      if cfg.max_frame_patches is not None:  # a frame lies within its chunk and the two beside it
        return attention_lib.local_attention(
          query,
          key,
          value,
          frame_segment_ids[None],
          chunk=round_up(cfg.max_frame_patches, vision.merge_unit),
          **attn_kw,
        )
      return attention_lib.self_attention(query, key, value, frame_segment_ids[None], causal=False, **attn_kw)

    def window_attention():  # a window is at most window_patches consecutive patches
      return attention_lib.local_attention(
        query, key, value, window_segment_ids[None], chunk=window_patches(vision), **attn_kw
      )

    if isinstance(is_full_attention, bool):
      out = frame_attention() if is_full_attention else window_attention()
    else:
      out = jax.lax.cond(is_full_attention, frame_attention, window_attention)
    out = out[0]
    return dense(
      vision.hidden_size,
      ("vision_heads", "head_dim", "vision_embed"),
      num_input_axes=2,
      use_bias=True,
      name="proj",
      **kw,
    )(out)


class VisionBlock(nn.Module):
  """Pre-norm block; `is_full_attention` picks frame-wide instead of window attention (scanned per block)."""

  config: Qwen25VLConfig

  @nn.compact
  def __call__(self, x, is_full_attention, block_inputs):
    cfg, vision = self.config, self.config.vision
    cos, sin, window_segment_ids, frame_segment_ids = block_inputs
    norm = lambda name: RMSNorm(1e-6, cfg.compute_dtype, cfg.weight_dtype, name=name)
    x = x + VisionAttention(cfg, name="attn")(
      norm("norm1")(x), is_full_attention, window_segment_ids, frame_segment_ids, cos, sin
    )
    mlp = GatedMlp(
      vision.hidden_size,
      vision.intermediate_size,
      use_bias=True,
      embed_axis="vision_embed",
      mlp_axis="vision_mlp",
      dtype=cfg.compute_dtype,
      param_dtype=cfg.weight_dtype,
      precision=cfg.matmul_precision,
      name="mlp",
    )
    return x + mlp(norm("norm2")(x)), None


class PatchMerger(nn.Module):
  """RMSNorm over each patch, concatenate each 2x2 block, then Linear -> exact GELU -> Linear."""

  config: Qwen25VLConfig

  @nn.compact
  def __call__(self, x):
    cfg, vision = self.config, self.config.vision
    kw = dict(use_bias=True, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, precision=cfg.matmul_precision)
    merged_dim = vision.hidden_size * vision.merge_unit
    x = RMSNorm(1e-6, cfg.compute_dtype, cfg.weight_dtype, name="ln_q")(x).reshape(-1, merged_dim)
    x = dense(merged_dim, ("vision_merge", "vision_mlp"), name="mlp_0", **kw)(x)
    x = nn.gelu(x, approximate=False)
    return dense(vision.out_hidden_size, ("vision_mlp", "embed"), name="mlp_2", **kw)(x)


class VisionTower(nn.Module):
  config: Qwen25VLConfig

  @nn.compact
  def __call__(self, inputs: VisionInputs) -> jax.Array:
    """Merged-token features [M, out_hidden] in raster order (rows past the real tokens are padding)."""
    cfg, vision = self.config, self.config.vision
    pixels = inputs.pixel_values.astype(cfg.compute_dtype)[inputs.patch_order]
    x = dense(
      vision.hidden_size,
      ("vision_patch", "vision_embed"),
      use_bias=False,
      dtype=cfg.compute_dtype,
      param_dtype=cfg.weight_dtype,
      precision=cfg.matmul_precision,
      name="patch_embed",
    )(pixels)
    cos, sin = rope.vision_cos_sin(inputs.patch_positions, vision.head_dim, vision.rope_theta)
    block_inputs = (cos, sin, inputs.window_segment_ids, inputs.frame_segment_ids)
    full_flags = np.array([i in vision.fullatt_block_indexes for i in range(vision.depth)])
    block_cls = VisionBlock
    if cfg.remat_policy is not None:
      block_cls = nn.remat(block_cls, policy=cfg.remat_policy_fn, prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      blocks = nn.scan(
        block_cls,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=(0, nn.broadcast),
        length=vision.depth,
        metadata_params={nn.PARTITION_NAME: "layers"},
      )(cfg, name="blocks")
      x, _ = blocks(x, jnp.asarray(full_flags), block_inputs)
    else:
      for i in range(vision.depth):
        x, _ = block_cls(cfg, name=f"blocks_{i}")(x, bool(full_flags[i]), block_inputs)
    merged = PatchMerger(cfg, name="merger")(x)
    return merged[inputs.token_order]
