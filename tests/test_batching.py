"""Padding ragged rows into static-shape batches."""

import numpy as np
import pytest

from vrrl_jax.data import batching
from vrrl_jax.data.conversation import EncodedConversation


def _row(n, images):
  grid = np.array([[1, 4, 4]] * images, np.int64).reshape(-1, 3)
  return EncodedConversation(
    input_ids=np.arange(n) + 1,
    assistant_mask=(np.arange(n) % 2).astype(np.int32),
    turn_index=np.where(np.arange(n) % 2, 0, -1).astype(np.int32),
    pixel_values=np.ones((16 * images, 8), np.float32),
    image_grid_thw=grid,
  )


def test_pad_rows_layout_and_filler_rows():
  rows = [_row(5, 1), _row(70, 2)]
  out = batching.pad_rows(rows, pad_id=-7, num_rows=4)
  assert out.input_ids.shape == (4, 96)  # 70 -> geometric bucket 96 (2^k or 1.5 * 2^k, multiple of 16)
  np.testing.assert_array_equal(out.input_ids[0, :5], np.arange(5) + 1)
  assert (out.input_ids[0, 5:] == -7).all() and out.attention_mask[0].sum() == 5
  # Filler rows repeat the last row's tokens and images but carry no loss.
  np.testing.assert_array_equal(out.input_ids[3], out.input_ids[1])
  assert out.assistant_mask[2:].sum() == 0 and (out.turn_index[2:] == -1).all()
  np.testing.assert_array_equal(out.images_per_row, [1, 2, 2, 2])
  assert len(out.image_grid_thw) == 7 and out.pixel_values.shape[0] == 16 * 7
  # Micro-batches [row0,row1] = 48 patches, [row2,row3] = 64 patches -> one bucket holding 64.
  assert out.patch_bucket(2, minimum=16) == 64
  assert out.patch_bucket(1, minimum=16) == 128  # 112 patches -> 128


def test_pad_rows_rejects_bad_input():
  with pytest.raises(ValueError, match="at least one row"):
    batching.pad_rows([], pad_id=0)
  with pytest.raises(ValueError, match="smaller than"):
    batching.pad_rows([_row(3, 1), _row(3, 1)], pad_id=0, num_rows=1)
