"""What every model family's jittable forward takes and returns (`vrrl_jax.models.families`)."""

from __future__ import annotations

import flax.struct
import jax
import numpy as np

from vrrl_jax.models import rope
from vrrl_jax.models.kv_cache import KVCache


@flax.struct.dataclass
class ModelInputs:
  """Static-shape inputs of a model's `forward` (made by its family's `prepare_inputs`)."""

  input_ids: jax.Array  # [B, S] int32
  segment_ids: jax.Array  # [B, S] int32: 1 real token, 0 padding (the attention mask)
  positions: jax.Array  # [3, B, S] int32 M-RoPE positions (T, H, W)
  vision: object = None  # the family's packed VisionInputs for the images of the whole batch, or None


@flax.struct.dataclass
class ModelOutput:
  logits: jax.Array  # [B, S, vocab] float32
  cache: KVCache | None = None


def prepare_inputs(
  config,
  prepare_vision_inputs,
  input_ids,
  attention_mask=None,
  pixel_values=None,
  image_grid_thw=None,
  mm_token_type_ids=None,
  patch_multiple: int = 256,
) -> tuple[ModelInputs, np.ndarray]:
  """Host-side preparation of processor outputs for either family: M-RoPE positions (`get_rope_index`, the same for
  both families' images), and the images packed by the family's ``prepare_vision_inputs``. Returns the inputs and
  rope_deltas [B] (the next token of row b goes to position max(positions[:, b]) + 1 = n_valid + delta).

  mm_token_type_ids, when absent, is derived as input_ids == image_token_id (what the processor produces).
  """
  input_ids = np.asarray(input_ids)
  if input_ids.ndim != 2:
    raise ValueError(f"input_ids must be [batch, seq], got shape {input_ids.shape}")
  if attention_mask is None:
    attention_mask = np.ones_like(input_ids)
  attention_mask = np.asarray(attention_mask)
  if attention_mask.shape != input_ids.shape:
    raise ValueError(f"attention_mask shape {attention_mask.shape} != input_ids shape {input_ids.shape}")
  is_image = input_ids == config.image_token_id
  if mm_token_type_ids is None:
    mm_token_type_ids = is_image.astype(np.int32)
  mm_token_type_ids = np.asarray(mm_token_type_ids)
  if mm_token_type_ids.shape != input_ids.shape:
    raise ValueError(f"mm_token_type_ids shape {mm_token_type_ids.shape} != input_ids shape {input_ids.shape}")
  if not np.array_equal(mm_token_type_ids == 1, is_image):
    raise ValueError("mm_token_type_ids == 1 must mark exactly the image_token_id positions")
  if (pixel_values is None) != (image_grid_thw is None):
    raise ValueError("pixel_values and image_grid_thw must be given together")

  vision = None
  if image_grid_thw is not None:
    image_grid_thw = np.asarray(image_grid_thw).reshape(-1, 3)
    num_features = int(np.prod(image_grid_thw, axis=1).sum()) // config.vision.merge_unit
    if int(is_image.sum()) != num_features:
      raise ValueError(
        f"image features and image tokens do not match: {int(is_image.sum())} image tokens, "
        f"{num_features} features from image_grid_thw"
      )
    vision = prepare_vision_inputs(
      pixel_values, image_grid_thw, config.vision, patch_multiple, config.max_frame_patches
    )
  elif is_image.any():
    raise ValueError(f"input_ids hold {int(is_image.sum())} image tokens but no pixel_values were given")

  positions, rope_deltas = rope.get_rope_index(
    input_ids, mm_token_type_ids, image_grid_thw, attention_mask, config.vision.spatial_merge_size
  )
  inputs = ModelInputs(
    input_ids=input_ids.astype(np.int32),
    segment_ids=attention_mask.astype(np.int32),
    positions=positions,
    vision=vision,
  )
  return inputs, rope_deltas
