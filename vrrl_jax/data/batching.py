"""Ragged token rows -> one right-padded, static-shape batch (host side, numpy).

Sequence lengths and packed image patches are rounded up to geometric buckets (2^k and 1.5 * 2^k, the sampler's
``geometric_bucket``) so a long run compiles a bounded number of update programs; padding tokens have
attention_mask 0 and never carry loss.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from vrrl_jax.sampling.buckets import geometric_bucket

MIN_LENGTH = 64  # smallest sequence bucket
MIN_PATCHES = 256  # smallest packed-patch bucket


@dataclasses.dataclass
class PaddedBatch:
  input_ids: np.ndarray  # [B, S] int32
  attention_mask: np.ndarray  # [B, S] int32
  assistant_mask: np.ndarray  # [B, S] int32
  turn_index: np.ndarray  # [B, S] int32 (-1 outside assistant turns and on padding)
  pixel_values: np.ndarray  # [patches, patch_dim] float32, rows' images in row order
  image_grid_thw: np.ndarray  # [n_images, 3]
  lengths: np.ndarray  # [B] real tokens per row
  images_per_row: np.ndarray  # [B] images each row holds

  def patch_bucket(self, num_micro_batches: int, minimum: int = MIN_PATCHES) -> int:
    """A patch count every micro-batch's packed images fit in (pass as ``patch_multiple``)."""
    patches = np.prod(self.image_grid_thw, axis=1) if len(self.image_grid_thw) else np.zeros(0, np.int64)
    per_row = np.zeros(len(self.lengths), np.int64)
    row_of_image = np.repeat(np.arange(len(self.lengths)), self.images_per_row)
    np.add.at(per_row, row_of_image, patches)
    per_micro = per_row.reshape(num_micro_batches, -1).sum(axis=1)
    return geometric_bucket(int(per_micro.max()), minimum, 16)


def pad_rows(rows: Sequence, pad_id: int, min_length: int = MIN_LENGTH, num_rows: int | None = None) -> PaddedBatch:
  """``rows``: objects with input_ids, assistant_mask, turn_index, pixel_values, image_grid_thw (1-D token
  arrays; e.g. ``EncodedConversation``). ``num_rows`` > len(rows) repeats the last row with no loss (its
  assistant_mask and turn_index zeroed), so batches divide evenly into micro-batches and devices."""
  if not rows:
    raise ValueError("pad_rows needs at least one row")
  rows = list(rows)
  num_rows = len(rows) if num_rows is None else num_rows
  if num_rows < len(rows):
    raise ValueError(f"num_rows={num_rows} is smaller than the {len(rows)} rows given")
  length = geometric_bucket(max(len(r.input_ids) for r in rows), min_length, 16)
  input_ids = np.full((num_rows, length), pad_id, np.int32)
  attention_mask = np.zeros((num_rows, length), np.int32)
  assistant_mask = np.zeros((num_rows, length), np.int32)
  turn_index = np.full((num_rows, length), -1, np.int32)
  lengths = np.zeros(num_rows, np.int32)
  pixels, grids = [], []
  images_per_row = np.zeros(num_rows, np.int64)
  for b in range(num_rows):
    row = rows[min(b, len(rows) - 1)]
    n = len(row.input_ids)
    input_ids[b, :n] = row.input_ids
    attention_mask[b, :n] = 1
    lengths[b] = n
    if b < len(rows):
      assistant_mask[b, :n] = row.assistant_mask
      turn_index[b, :n] = row.turn_index
    pixels.append(np.asarray(row.pixel_values, np.float32))
    grids.append(np.asarray(row.image_grid_thw, np.int64).reshape(-1, 3))
    images_per_row[b] = len(grids[-1])
  return PaddedBatch(
    input_ids=input_ids,
    attention_mask=attention_mask,
    assistant_mask=assistant_mask,
    turn_index=turn_index,
    pixel_values=np.concatenate(pixels, axis=0),
    image_grid_thw=np.concatenate(grids, axis=0),
    lengths=lengths,
    images_per_row=images_per_row,
  )
