"""Qwen25VL vs transformers' Qwen2_5_VLForConditionalGeneration (tiny, random O(1) weights, float32).

Acceptance: max|ours - ref| / max|ref| over valid positions <= 1e-4 (measured ~1e-6). Run with -s to see the
measured errors.
"""

import dataclasses
import functools

import jax
import numpy as np
import pytest
import torch

import qwen_tiny as qt
from vrrl_jax.checkpoints import hf as hf_ckpt
from vrrl_jax.models import Qwen25VL, Qwen25VLConfig, get_rope_index, prepare_inputs
from vrrl_jax.models import vision as vision_lib

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def hf_untied():
  return qt.build_hf_model(tie_word_embeddings=False, seed=0)


@pytest.fixture(scope="module")
def hf_tied():
  return qt.build_hf_model(tie_word_embeddings=True, seed=1)


def convert(hf_model, **options):
  config = Qwen25VLConfig.from_hf(hf_model.config, **options)
  return config, hf_ckpt.params_from_state_dict(hf_model.state_dict(), config)


@functools.cache
def jitted_forward(config):
  return jax.jit(functools.partial(Qwen25VL(config).apply, method=Qwen25VL.forward))


@functools.cache
def jitted_encode_images(config):
  return jax.jit(functools.partial(Qwen25VL(config).apply, method=Qwen25VL.encode_images))


def hf_logits(model, ids, mask, grids, pixels):
  kwargs = dict(
    input_ids=torch.tensor(ids),
    attention_mask=torch.tensor(mask),
    mm_token_type_ids=torch.tensor((ids == qt.IMAGE_TOKEN_ID).astype(np.int64)),
  )
  if grids:
    kwargs.update(pixel_values=torch.tensor(pixels), image_grid_thw=torch.tensor(grids))
  with torch.no_grad():
    return model(**kwargs).logits.numpy()


def our_logits(config, params, ids, mask, grids, pixels, patch_multiple=256):
  inputs, _ = prepare_inputs(
    config, ids, mask, pixels if grids else None, np.array(grids) if grids else None, patch_multiple=patch_multiple
  )
  return np.asarray(jitted_forward(config)({"params": params}, inputs).logits)


def scenario(name, rng):
  """(ids, mask, grids, pixels) for a named input layout."""
  if name == "text_only":
    rows, grids = [qt.make_row(rng, [12]), qt.make_row(rng, [12])], []
  elif name == "one_image":
    grids = [(1, 8, 8)]
    rows = [qt.make_row(rng, [3, grids[0], 5])]
  elif name == "two_images_window_padding":
    grids = [(1, 4, 6), (1, 6, 4)]
    rows = [qt.make_row(rng, [3, grids[0], 3, grids[1], 4])]
  elif name == "left_padded_batch":
    grids = [(1, 4, 6), (1, 6, 4), (1, 4, 4)]
    rows = [qt.make_row(rng, [2, grids[0], 3]), qt.make_row(rng, [4, grids[1], 2, grids[2], 3])]
  else:
    raise ValueError(name)
  ids, mask = qt.left_pad(rows)
  return ids, mask, grids, qt.random_pixels(grids, rng)


@pytest.mark.parametrize("name", ["text_only", "one_image", "two_images_window_padding", "left_padded_batch"])
def test_logits_match_transformers(hf_untied, name):
  ids, mask, grids, pixels = scenario(name, np.random.default_rng(0))
  config, params = convert(hf_untied)
  ref = hf_logits(hf_untied, ids, mask, grids, pixels)
  err = qt.rel_error(our_logits(config, params, ids, mask, grids, pixels), ref, mask)
  print(f"[parity] logits {name}: rel {err:.2e}")
  assert err <= TOLERANCE


@pytest.mark.parametrize("tied", [False, True])
def test_hidden_states_then_lm_logits_match_transformers(hf_untied, hf_tied, tied):
  """The chunkable path (hidden states, then the LM head on a slice of positions) gives HF's logits."""
  hf_model = hf_tied if tied else hf_untied
  ids, mask, grids, pixels = scenario("left_padded_batch", np.random.default_rng(2))
  config, params = convert(hf_model)
  inputs, _ = prepare_inputs(config, ids, mask, pixels, np.array(grids))
  model = Qwen25VL(config)
  hidden = model.apply({"params": params}, inputs, return_logits=False, method=Qwen25VL.forward).logits
  assert hidden.shape == (*ids.shape, config.text.hidden_size)
  ref = hf_logits(hf_model, ids, mask, grids, pixels)
  tail = slice(ids.shape[1] - 5, ids.shape[1])  # only the last 5 positions get logits
  logits = np.asarray(model.apply({"params": params}, hidden[:, tail], method=Qwen25VL.lm_logits))
  err = qt.rel_error(logits, ref[:, tail], mask[:, tail])
  print(f"[parity] hidden -> lm_logits tied={tied}: rel {err:.2e}")
  assert err <= TOLERANCE


def test_tied_embeddings_logits_match_transformers(hf_tied):
  ids, mask, grids, pixels = scenario("two_images_window_padding", np.random.default_rng(1))
  config, params = convert(hf_tied)
  assert config.tie_word_embeddings and "lm_head" not in params["language_model"]
  err = qt.rel_error(
    our_logits(config, params, ids, mask, grids, pixels), hf_logits(hf_tied, ids, mask, grids, pixels), mask
  )
  print(f"[parity] logits tied embeddings: rel {err:.2e}")
  assert err <= TOLERANCE


@pytest.mark.parametrize("patch_multiple", [4, 64])
def test_bucketed_padding_matches_unpadded(hf_untied, patch_multiple):
  # 48 real patches: multiple 4 -> no padding, 64 -> 16 padding patches (the 256 bucket is the default above).
  ids, mask, grids, pixels = scenario("two_images_window_padding", np.random.default_rng(2))
  config, params = convert(hf_untied)
  ref = hf_logits(hf_untied, ids, mask, grids, pixels)
  bucketed = our_logits(config, params, ids, mask, grids, pixels, patch_multiple=256)
  other = our_logits(config, params, ids, mask, grids, pixels, patch_multiple=patch_multiple)
  print(
    f"[parity] patch_multiple {patch_multiple} vs transformers: rel {qt.rel_error(other, ref, mask):.2e}; "
    f"vs bucket 256: rel {qt.rel_error(other, bucketed, mask):.2e}"
  )
  assert qt.rel_error(other, ref, mask) <= TOLERANCE
  assert qt.rel_error(other, bucketed, mask) <= 1e-5


@pytest.mark.parametrize(
  "grids",
  [[(1, 4, 6), (1, 6, 4)], [(1, 8, 8), (1, 2, 10)], [(2, 4, 6)]],
  ids=["window_padding", "mixed_sizes", "two_frames"],
)
def test_vision_tower_matches_transformers(hf_untied, grids):
  pixels = qt.random_pixels(grids, np.random.default_rng(3))
  config, params = convert(hf_untied)
  with torch.no_grad():
    ref = hf_untied.model.visual(torch.tensor(pixels), grid_thw=torch.tensor(grids)).pooler_output.numpy()
  inputs = vision_lib.prepare_vision_inputs(pixels, np.array(grids), config.vision, patch_multiple=256)
  features = np.asarray(jitted_encode_images(config)({"params": params}, inputs))
  err = qt.rel_error(features[: len(ref)], ref)
  print(f"[parity] vision pooler {grids}: rel {err:.2e}")
  assert features.shape == (256 // 4, config.text.hidden_size)
  assert err <= TOLERANCE


@pytest.mark.parametrize("grids", [[(1, 4, 6), (1, 6, 4)], [(1, 8, 8), (1, 2, 10)], [(2, 4, 6)]])
def test_window_index_matches_transformers(grids):
  from transformers import vision_utils

  config = Qwen25VLConfig.from_hf(qt.tiny_config_dict())
  ref_index, ref_cu = vision_utils.get_vision_window_index(torch.tensor(grids), 2, config.vision.window_size, 14)
  order, window_ids = vision_lib.window_index(np.array(grids), config.vision)
  np.testing.assert_array_equal(order, ref_index.numpy())
  cu = np.concatenate([[0], np.cumsum(np.bincount(window_ids) * 4)])
  np.testing.assert_array_equal(cu, ref_cu.numpy())
  ref_positions = vision_utils.get_vision_position_ids(torch.tensor(grids), 2).numpy()
  np.testing.assert_array_equal(vision_lib.merge_block_positions(np.array(grids), 2), ref_positions)


@pytest.mark.parametrize("name", ["text_only", "two_images_window_padding", "left_padded_batch"])
def test_get_rope_index_matches_transformers(hf_untied, name):
  ids, mask, grids, _ = scenario(name, np.random.default_rng(4))
  types = (ids == qt.IMAGE_TOKEN_ID).astype(np.int64)
  ref_positions, ref_deltas = hf_untied.model.get_rope_index(
    torch.tensor(ids),
    mm_token_type_ids=torch.tensor(types),
    image_grid_thw=torch.tensor(grids) if grids else None,
    attention_mask=torch.tensor(mask),
  )
  positions, deltas = get_rope_index(ids, types, np.array(grids) if grids else None, mask, 2)
  np.testing.assert_array_equal(positions, ref_positions.numpy())
  np.testing.assert_array_equal(deltas, ref_deltas.numpy()[:, 0])


def test_call_on_processor_style_arrays(hf_untied):
  """model.apply(params, **processor_outputs) prepares on the host and returns .logits."""
  ids, mask, grids, pixels = scenario("left_padded_batch", np.random.default_rng(5))
  config, params = convert(hf_untied)
  processor_outputs = dict(
    input_ids=ids,
    attention_mask=mask,
    pixel_values=pixels,
    image_grid_thw=np.array(grids, np.int64),
    mm_token_type_ids=(ids == qt.IMAGE_TOKEN_ID).astype(np.int64),
  )
  out = Qwen25VL(config).apply({"params": params}, **processor_outputs)
  err = qt.rel_error(out.logits, hf_logits(hf_untied, ids, mask, grids, pixels), mask)
  print(f"[parity] __call__ on processor arrays: rel {err:.2e}")
  assert err <= TOLERANCE


def test_mismatched_image_tokens_raise(hf_untied):
  ids, mask, grids, pixels = scenario("one_image", np.random.default_rng(6))
  config = Qwen25VLConfig.from_hf(hf_untied.config)
  with pytest.raises(ValueError, match="image features and image tokens do not match"):
    prepare_inputs(config, ids[:, :-3], mask[:, :-3], pixels, np.array([(1, 8, 10)]))
  with pytest.raises(ValueError, match="no pixel_values"):
    prepare_inputs(config, ids, mask)


def test_image_sizes_in_one_bucket_compile_once(hf_untied):
  config, params = convert(hf_untied)
  traces = []

  def encode(params, inputs):
    traces.append(1)
    return Qwen25VL(config).apply({"params": params}, inputs, method=Qwen25VL.encode_images)

  encode = jax.jit(encode)
  rng = np.random.default_rng(7)
  for grids in ([(1, 4, 6), (1, 6, 4)], [(1, 8, 8), (1, 2, 10)], [(1, 10, 12)]):
    pixels = qt.random_pixels(grids, rng)
    with torch.no_grad():
      ref = hf_untied.model.visual(torch.tensor(pixels), grid_thw=torch.tensor(grids)).pooler_output.numpy()
    inputs = vision_lib.prepare_vision_inputs(pixels, np.array(grids), config.vision, patch_multiple=256)
    assert qt.rel_error(np.asarray(encode(params, inputs))[: len(ref)], ref) <= TOLERANCE
  assert len(traces) == 1


@pytest.mark.parametrize("max_frame_patches", [None, 120], ids=["blocked_all_pairs", "banded"])
def test_vision_tower_many_images_matches_transformers(hf_untied, max_frame_patches):
  """Enough patches (648, padded to 768) that the full-attention blocks take their multi-block paths: the blocked
  all-pairs loop (frame size unknown) and the band of 3 frame-sized chunks (max_frame_patches from the processor)."""
  grids = [(1, 10, 12), (1, 8, 10), (1, 10, 12), (2, 4, 6), (1, 8, 10), (1, 10, 12), (1, 8, 10)]
  pixels = qt.random_pixels(grids, np.random.default_rng(8))
  config, params = convert(hf_untied)
  config = dataclasses.replace(config, max_frame_patches=max_frame_patches)
  with torch.no_grad():
    ref = hf_untied.model.visual(torch.tensor(pixels), grid_thw=torch.tensor(grids)).pooler_output.numpy()
  inputs = vision_lib.prepare_vision_inputs(
    pixels, np.array(grids), config.vision, patch_multiple=256, max_frame_patches=max_frame_patches
  )
  features = np.asarray(jitted_encode_images(config)({"params": params}, inputs))
  err = qt.rel_error(features[: len(ref)], ref)
  print(f"[parity] vision pooler, 7 images, max_frame_patches={max_frame_patches}: rel {err:.2e}")
  assert err <= TOLERANCE


def test_frame_larger_than_max_frame_patches_is_refused():
  config = Qwen25VLConfig.from_hf(qt.tiny_config_dict())
  grids = np.array([(1, 8, 10), (1, 10, 12)])
  pixels = qt.random_pixels(grids.tolist(), np.random.default_rng(9))
  with pytest.raises(ValueError, match="more than the model's max_frame_patches=100"):
    vision_lib.prepare_vision_inputs(pixels, grids, config.vision, max_frame_patches=100)
  with pytest.raises(ValueError, match="max_frame_patches must be None or an int"):
    dataclasses.replace(config, max_frame_patches=2)
