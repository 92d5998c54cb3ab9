"""Cached prefill + decode equals transformers' full forward on the whole sequence.

Two rows with images and different lengths. The reference is one full transformers forward on the left-padded
prompt + continuation. Ours prefills the prompt into a KV cache (left-padded: equal row lengths, padding kept as
masked slots; right-padded: compact rows at different per-row offsets) and then decodes the continuation one token
at a time at positions p_last + 1 + j.
"""

import functools

import jax
import numpy as np
import pytest
import torch

import qwen_tiny as qt
from vrrl_jax.checkpoints import hf as hf_ckpt
from vrrl_jax.models import ModelInputs, Qwen25VL, Qwen25VLConfig, init_cache, prepare_inputs

TOLERANCE = 1e-4
STEPS = 4
MAX_LEN = 40


@pytest.fixture(scope="module")
def hf_model():
  return qt.build_hf_model(tie_word_embeddings=False, seed=2)


@pytest.fixture(scope="module")
def example(hf_model):
  rng = np.random.default_rng(0)
  grids = [(1, 4, 6), (1, 6, 4), (1, 4, 4)]
  prompts = [qt.make_row(rng, [3, grids[0], 2]), qt.make_row(rng, [2, grids[1], 3, grids[2], 1])]
  continuation = rng.integers(1, qt.VISION_START_ID, size=(2, STEPS))
  full = [p + c.tolist() for p, c in zip(prompts, continuation)]
  ids, mask = qt.left_pad(full)
  pixels = qt.random_pixels(grids, rng)
  with torch.no_grad():
    ref = hf_model(
      input_ids=torch.tensor(ids),
      attention_mask=torch.tensor(mask),
      mm_token_type_ids=torch.tensor((ids == qt.IMAGE_TOKEN_ID).astype(np.int64)),
      pixel_values=torch.tensor(pixels),
      image_grid_thw=torch.tensor(grids),
    ).logits.numpy()
  # ref_rows[b][i] = reference logits of the i-th real token of row b.
  ref_rows = [ref[b, ids.shape[1] - len(row) :] for b, row in enumerate(full)]
  return dict(prompts=prompts, continuation=continuation, grids=grids, pixels=pixels, ref_rows=ref_rows)


@functools.cache
def jitted_forward(config):
  return jax.jit(functools.partial(Qwen25VL(config).apply, method=Qwen25VL.forward))


@pytest.mark.parametrize("scan_layers", [False, True])
@pytest.mark.parametrize("padding", ["left", "right"])
def test_prefill_then_decode_matches_full_forward(hf_model, example, padding, scan_layers):
  config = Qwen25VLConfig.from_hf(hf_model.config, scan_layers=scan_layers)
  params = {"params": hf_ckpt.params_from_state_dict(hf_model.state_dict(), config)}
  forward = jitted_forward(config)
  prompts, ref_rows = example["prompts"], example["ref_rows"]
  lengths = np.array([len(p) for p in prompts])
  ids, mask = (qt.left_pad if padding == "left" else qt.right_pad)(prompts)
  inputs, rope_deltas = prepare_inputs(config, ids, mask, example["pixels"], np.array(example["grids"]))

  out = forward(params, inputs, init_cache(config, batch=2, max_len=MAX_LEN))
  errors = []
  for b, length in enumerate(lengths):
    real = np.flatnonzero(mask[b])
    errors.append(qt.rel_error(out.logits[b, real], ref_rows[b][:length]))
  cache = out.cache
  expected_lengths = [ids.shape[1]] * 2 if padding == "left" else lengths
  np.testing.assert_array_equal(cache.lengths, expected_lengths)

  next_position = inputs.positions.max(axis=(0, 2)) + 1
  np.testing.assert_array_equal(next_position, mask.sum(1) + rope_deltas)
  for step in range(STEPS):
    positions = np.broadcast_to((next_position + step)[None, :, None], (3, 2, 1)).astype(np.int32)
    step_inputs = ModelInputs(
      input_ids=example["continuation"][:, step : step + 1].astype(np.int32),
      segment_ids=np.ones((2, 1), np.int32),
      positions=positions,
    )
    out = forward(params, step_inputs, cache)
    cache = out.cache
    for b, length in enumerate(lengths):
      errors.append(qt.rel_error(out.logits[b, 0], ref_rows[b][length + step]))
  np.testing.assert_array_equal(cache.lengths, np.asarray(expected_lengths) + STEPS)
  print(
    f"[parity] cached prefill+{STEPS} decode steps ({padding} padding, scan={scan_layers}): max rel {max(errors):.2e}"
  )
  assert max(errors) <= TOLERANCE

  # A row whose chunk has no real token (a finished sequence) does not advance.
  idle = ModelInputs(
    input_ids=np.zeros((2, 1), np.int32),
    segment_ids=np.array([[0], [1]], np.int32),
    positions=np.zeros((3, 2, 1), np.int32),
  )
  np.testing.assert_array_equal(forward(params, idle, cache).cache.lengths, cache.lengths + np.array([0, 1]))
