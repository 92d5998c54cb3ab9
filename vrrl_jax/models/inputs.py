"""What every model family's jittable forward takes and returns (`vrrl_jax.models.families`)."""

from __future__ import annotations

import flax.struct
import jax

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
