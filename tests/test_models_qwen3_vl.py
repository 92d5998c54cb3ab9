"""Qwen3VL vs transformers' Qwen3VLForConditionalGeneration (tiny, random O(1) weights, float32): the vision tower
and its DeepStack features, logits (images, left padding, tied embeddings, scanned layers), cached decoding against
generate(), the state_dict round trip, and the interleaved M-RoPE layout written out by hand (QWEN_VL_NOTES 6.2).

Acceptance: max|ours - ref| / max|ref| over valid positions <= 1e-5 (measured ~6e-7)."""

import copy
import functools

import jax
import numpy as np
import pytest
import torch

import qwen_tiny as qt
from vrrl_jax.checkpoints import hf as hf_ckpt
from vrrl_jax.models import kv_cache, rope
from vrrl_jax.models.qwen3_vl import Qwen3VL, Qwen3VLConfig, init_cache, prepare_inputs, prepare_vision_inputs

TOLERANCE = 1e-5  # the bar; measured ~6e-7
PATCH_DIM = qt.PATCH_DIMS["qwen3_vl"]
QWEN3_TINY = qt.QWEN3_TINY


def build_hf(tie: bool = False, seed: int = 0):
  return qt.build_hf_model(tie, seed, family="qwen3_vl")


@pytest.fixture(scope="module")
def hf_untied():
  return build_hf(False, 0)


@pytest.fixture(scope="module")
def hf_tied():
  return build_hf(True, 1)


def convert(hf_model, **options):
  config = Qwen3VLConfig.from_hf(hf_model.config, **options)
  return config, hf_ckpt.params_from_state_dict(hf_model.state_dict(), config)


@functools.cache
def jitted_forward(config):
  return jax.jit(functools.partial(Qwen3VL(config).apply, method=Qwen3VL.forward))


def pixels_for(grids, rng):
  return rng.standard_normal((int(sum(t * h * w for t, h, w in grids)), PATCH_DIM)).astype(np.float32)


def scenario(name, rng):
  if name == "text_only":
    rows, grids = [qt.make_row(rng, [12]), qt.make_row(rng, [12])], []
  elif name == "two_images":
    grids = [(1, 4, 6), (1, 6, 4)]
    rows = [qt.make_row(rng, [3, grids[0], 3, grids[1], 4])]
  elif name == "larger_than_the_position_table":  # 8 x 8 and 2 x 10 patches from a 4 x 4 table
    grids = [(1, 8, 8), (1, 2, 10)]
    rows = [qt.make_row(rng, [2, grids[0], 3, grids[1], 2])]
  elif name == "left_padded_batch":
    grids = [(1, 4, 6), (1, 6, 4), (1, 4, 4)]
    rows = [qt.make_row(rng, [2, grids[0], 3]), qt.make_row(rng, [4, grids[1], 2, grids[2], 3])]
  else:
    raise ValueError(name)
  ids, mask = qt.left_pad(rows)
  return ids, mask, grids, pixels_for(grids, rng)


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
  types = (ids == qt.IMAGE_TOKEN_ID).astype(np.int64)
  inputs, _ = prepare_inputs(
    config,
    ids,
    mask,
    pixels if grids else None,
    np.array(grids) if grids else None,
    types,
    patch_multiple=patch_multiple,
  )
  return np.asarray(jitted_forward(config)({"params": params}, inputs).logits)


def test_interleaved_mrope_layout_as_written_in_the_notes():
  # head_dim 16, mrope_section [4, 2, 2]: axes T H W T H W T T (QWEN_VL_NOTES 6.2).
  assert rope.mrope_axes((4, 2, 2), 16, interleaved=True).tolist() == [0, 1, 2, 0, 1, 2, 0, 0]
  # hd 128, [24, 20, 20]: THW x 20, then TTTT.
  assert rope.mrope_axes((24, 20, 20), 128, interleaved=True).tolist() == [0, 1, 2] * 20 + [0] * 4
  assert rope.mrope_axes((2, 3, 3), 16).tolist() == [0, 0, 1, 1, 1, 2, 2, 2]  # Qwen2.5-VL's chunks


@pytest.mark.parametrize("grids", [[(1, 4, 6), (1, 6, 4)], [(1, 8, 8), (1, 2, 10)], [(2, 4, 6)]])
def test_vision_tower_and_deepstack_match_transformers(hf_untied, grids):
  config, params = convert(hf_untied)
  pixels = pixels_for(grids, np.random.default_rng(3))
  with torch.no_grad():
    ref = hf_untied.model.visual(torch.tensor(pixels), grid_thw=torch.tensor(grids))
  vision = prepare_vision_inputs(pixels, np.array(grids), config.vision, patch_multiple=64)
  merged, deep = Qwen3VL(config).apply({"params": params}, vision, method=Qwen3VL.encode_images)
  n = int(sum(t * h * w for t, h, w in grids)) // 4
  assert qt.rel_error(merged[:n], ref.pooler_output.numpy()) <= TOLERANCE
  assert len(deep) == len(ref.deepstack_features) == 2
  for ours, theirs in zip(deep, ref.deepstack_features):
    assert qt.rel_error(ours[:n], theirs.numpy()) <= TOLERANCE


@pytest.mark.parametrize("name", ["text_only", "two_images", "larger_than_the_position_table", "left_padded_batch"])
def test_logits_match_transformers(hf_untied, name):
  ids, mask, grids, pixels = scenario(name, np.random.default_rng(0))
  config, params = convert(hf_untied)
  err = qt.rel_error(
    our_logits(config, params, ids, mask, grids, pixels), hf_logits(hf_untied, ids, mask, grids, pixels), mask
  )
  print(f"[parity qwen3] logits {name}: rel {err:.2e}")
  assert err <= TOLERANCE


def test_tied_embeddings_and_scanned_layers_match_transformers(hf_tied):
  ids, mask, grids, pixels = scenario("left_padded_batch", np.random.default_rng(1))
  ref = hf_logits(hf_tied, ids, mask, grids, pixels)
  for scan in (False, True):
    config, params = convert(hf_tied, scan_layers=scan)
    assert config.tie_word_embeddings and "lm_head" not in params["language_model"]
    if scan:
      assert params["visual"]["blocks"]["block"]["norm1"]["scale"].shape == (3, 32)
    err = qt.rel_error(our_logits(config, params, ids, mask, grids, pixels), ref, mask)
    print(f"[parity qwen3] tied, scan_layers={scan}: rel {err:.2e}")
    assert err <= TOLERANCE


def test_state_dict_round_trip_both_layouts(hf_untied):
  config, params = convert(hf_untied)
  memory = hf_ckpt.state_dict_from_params(params, config, layout="memory")
  theirs = {k: v.numpy() for k, v in hf_untied.state_dict().items()}
  assert memory.keys() == theirs.keys()
  for key in theirs:
    np.testing.assert_array_equal(memory[key], theirs[key], err_msg=key)
  disk = hf_ckpt.state_dict_from_params(params, config, layout="disk")
  assert disk.keys() == memory.keys()  # transformers 5 saves Qwen3-VL under its in-memory names
  again = hf_ckpt.params_from_state_dict(disk, config)
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(params), strict=True):
    np.testing.assert_array_equal(a, b)


def test_cached_greedy_decoding_equals_generate(hf_untied):
  """Prefill with two images, then 6 greedy steps through the KV cache: the same tokens as transformers'
  generate(), and the step logits equal to a full forward over the grown sequence."""
  ids, mask, grids, pixels = scenario("two_images", np.random.default_rng(5))
  config, params = convert(hf_untied)
  types = (ids == qt.IMAGE_TOKEN_ID).astype(np.int64)
  with torch.no_grad():
    out = hf_untied.generate(
      input_ids=torch.tensor(ids),
      attention_mask=torch.tensor(mask),
      mm_token_type_ids=torch.tensor(types),
      pixel_values=torch.tensor(pixels),
      image_grid_thw=torch.tensor(grids),
      max_new_tokens=6,
      do_sample=False,
    )
  theirs = out[0, ids.shape[1] :].numpy().tolist()

  inputs, deltas = prepare_inputs(config, ids, mask, pixels, np.array(grids), types)
  model = Qwen3VL(config)
  cache = init_cache(config, 1, 64)
  result = model.apply({"params": params}, inputs, cache, method=Qwen3VL.forward)
  cache, token = result.cache, int(np.argmax(result.logits[0, -1]))
  ours, position = [token], int(inputs.positions.max()) + 1
  for _ in range(5):
    step = inputs.replace(
      input_ids=np.array([[token]], np.int32),
      segment_ids=np.ones((1, 1), np.int32),
      positions=np.full((3, 1, 1), position, np.int32),
      vision=None,
    )
    result = model.apply({"params": params}, step, cache, method=Qwen3VL.forward)
    cache, token, position = result.cache, int(np.argmax(result.logits[0, -1])), position + 1
    ours.append(token)
  assert ours == theirs
  assert isinstance(cache, kv_cache.KVCache) and int(cache.lengths[0]) == ids.shape[1] + 5
  assert int(deltas[0]) == int(inputs.positions.max()) + 1 - ids.shape[1]


def test_moe_and_mismatched_configs_are_refused():
  raw = copy.deepcopy(QWEN3_TINY)
  with pytest.raises(ValueError, match="MoE"):
    Qwen3VLConfig.from_hf(dict(raw, model_type="qwen3_vl_moe"))
  with pytest.raises(ValueError, match="not a Qwen3-VL config"):
    Qwen3VLConfig.from_hf(dict(raw, model_type="qwen2_5_vl"))
  bad = copy.deepcopy(raw)
  bad["vision_config"]["num_position_embeddings"] = 15
  with pytest.raises(ValueError, match="must be a square"):
    Qwen3VLConfig.from_hf(bad)
  config = Qwen3VLConfig.from_hf(raw)
  ids = np.array([[1] + qt.image_tokens((1, 4, 4)) + [2]])
  with pytest.raises(ValueError, match="image features and image tokens do not match"):
    prepare_inputs(config, ids, None, pixels_for([(1, 4, 6)], np.random.default_rng(0)), np.array([[1, 4, 6]]))


@pytest.mark.parametrize("scan_layers", [False, True])
def test_from_pretrained_onto_a_mesh_and_orbax_round_trip(hf_untied, tmp_path, scan_layers):
  """A sharded HF directory loads straight onto the fake 8-device mesh with the rules' shardings and the logits of
  transformers; the orbax copy restores onto the same shardings (also into the other layer layout)."""
  from vrrl_jax.checkpoints import orbax_io
  from vrrl_jax.models import families, from_pretrained
  from vrrl_jax.parallel import mesh as mesh_lib
  from vrrl_jax.parallel import rules as rules_lib

  hf_untied.save_pretrained(tmp_path / "hf", max_shard_size="200KB")
  assert len(list((tmp_path / "hf").glob("model-*.safetensors"))) > 1
  mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  model, params = from_pretrained(
    tmp_path / "hf", mesh=mesh, rules=rules_lib.DEFAULT_RULES, scan_layers=scan_layers, progress=False
  )
  assert type(model).__name__ == "Qwen3VL"
  expected = mesh_lib.param_shardings(families.abstract_params(model.config)[1], mesh, rules_lib.DEFAULT_RULES)
  for leaf, sharding in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
  ids, mask, grids, pixels = scenario("left_padded_batch", np.random.default_rng(7))
  host = jax.device_get(params)
  err = qt.rel_error(
    our_logits(model.config, host, ids, mask, grids, pixels), hf_logits(hf_untied, ids, mask, grids, pixels), mask
  )
  assert err <= TOLERANCE
  orbax_io.save(tmp_path / "ckpt", host, model.config)
  _, restored = from_pretrained(tmp_path / "ckpt", mesh=mesh, scan_layers=not scan_layers, progress=False)
  _, other_layout = from_pretrained(tmp_path / "hf", scan_layers=not scan_layers, progress=False)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(other_layout), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
