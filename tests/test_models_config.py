"""Config parsing/validation and host-side index preparation, checked against values documented and verified
against transformers in QWEN_VL_NOTES (no torch needed here; the torch comparisons are in test_models_parity)."""

import copy
import dataclasses

import jax
import numpy as np
import pytest

import qwen_tiny
from vrrl_jax.models import Qwen25VLConfig, abstract_params, get_rope_index, init_params
from vrrl_jax.models import vision as vision_lib

# Qwen2.5-VL-7B-Instruct config.json as on the Hub (flat text fields, legacy rope spelling), QWEN_VL_NOTES §5.2.
HUB_7B = {
  "architectures": ["Qwen2_5_VLForConditionalGeneration"],
  "model_type": "qwen2_5_vl",
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "hidden_act": "silu",
  "hidden_size": 3584,
  "image_token_id": 151655,
  "initializer_range": 0.02,
  "intermediate_size": 18944,
  "max_position_embeddings": 128000,
  "max_window_layers": 28,
  "num_attention_heads": 28,
  "num_hidden_layers": 28,
  "num_key_value_heads": 4,
  "rms_norm_eps": 1e-06,
  "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
  "rope_theta": 1000000.0,
  "sliding_window": 32768,
  "tie_word_embeddings": False,
  "torch_dtype": "bfloat16",
  "use_cache": True,
  "use_sliding_window": False,
  "video_token_id": 151656,
  "vision_end_token_id": 151653,
  "vision_start_token_id": 151652,
  "vision_token_id": 151654,
  "vocab_size": 152064,
  "vision_config": {
    "depth": 32,
    "hidden_act": "silu",
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "in_chans": 3,
    "out_hidden_size": 3584,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "spatial_patch_size": 14,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
    "temporal_patch_size": 2,
    "model_type": "qwen2_5_vl",
  },
}


def test_hub_7b_config_legacy_spelling():
  config = Qwen25VLConfig.from_hf(HUB_7B)
  assert config.text.hidden_size == 3584 and config.text.num_hidden_layers == 28
  assert config.text.num_key_value_heads == 4 and config.text.head_dim == 128
  assert config.text.mrope_section == (16, 24, 24) and config.text.rope_theta == 1e6
  assert config.text.rms_norm_eps == 1e-6 and config.text.vocab_size == 152064
  assert config.vision.head_dim == 80 and config.vision.window_merged == 4 and config.vision.patch_dim == 1176
  assert config.vision.fullatt_block_indexes == (7, 15, 23, 31) and config.vision.tokens_per_second == 2
  assert not config.tie_word_embeddings and config.image_token_id == 151655


def test_nested_config_and_tie_forwarded_from_text_config():
  raw = qwen_tiny.tiny_config_dict()
  raw["text_config"]["tie_word_embeddings"] = True  # pre-v5 saves put it there; transformers forwards it up
  config = Qwen25VLConfig.from_hf(raw)
  assert config.tie_word_embeddings
  assert config.text.mrope_section == (2, 3, 3) and config.vision.depth == 4 and config.image_token_id == 250


def test_rope_parameters_and_rope_scaling_spellings_agree():
  new = qwen_tiny.tiny_config_dict()
  old = copy.deepcopy(new)
  rope = old["text_config"].pop("rope_parameters")
  old["text_config"]["rope_scaling"] = {"type": "mrope", "mrope_section": rope["mrope_section"]}
  old["text_config"]["rope_theta"] = rope["rope_theta"]
  old["vision_config"]["model_type"] = "qwen2_5_vl"
  old["vision_config"]["num_attention_heads"] = old["vision_config"].pop("num_heads")  # alias
  assert Qwen25VLConfig.from_hf(old) == Qwen25VLConfig.from_hf(new)


def test_run_options():
  config = Qwen25VLConfig.from_hf(
    qwen_tiny.tiny_config_dict(), dtype="bfloat16", scan_layers=True, remat_policy="nothing_saveable"
  )
  assert config.scan_layers and config.dtype == "bfloat16" and config.remat_policy_fn is not None
  assert hash(config) == hash(dataclasses.replace(config))


@pytest.mark.parametrize(
  "edit, message",
  [
    (lambda r: r["text_config"]["rope_parameters"].update(mrope_section=[2, 3, 4]), "sum\\(mrope_section\\)"),
    (lambda r: r["vision_config"].update(hidden_size=36, num_heads=2), "divisible by 4"),
    (lambda r: r["vision_config"].update(out_hidden_size=32), "out_hidden_size"),
    (lambda r: r["text_config"].update(head_dim=32), "head_dim"),
    (lambda r: r["text_config"].update(num_key_value_heads=3), "num_key_value_heads"),
    (lambda r: r["vision_config"].update(fullatt_block_indexes=[4]), "fullatt_block_indexes"),
    (lambda r: r["text_config"].pop("vocab_size"), "vocab_size"),
    (lambda r: r.update(model_type="qwen2_vl"), "model_type"),
    (lambda r: r["text_config"]["rope_parameters"].update(rope_type="yarn"), "rope_type"),
    (lambda r: r.update(image_token_id=300), "image_token_id"),
  ],
)
def test_invalid_configs_raise(edit, message):
  raw = qwen_tiny.tiny_config_dict()
  edit(raw)
  with pytest.raises(ValueError, match=message):
    Qwen25VLConfig.from_hf(raw)


def test_invalid_options_raise():
  raw = qwen_tiny.tiny_config_dict()
  for options, message in [
    (dict(dtype="float16"), "dtype"),
    (dict(remat_policy="nope"), "remat_policy"),
    (dict(attention_impl="flash"), "attention_impl"),
    (dict(precision="max"), "precision"),
  ]:
    with pytest.raises(ValueError, match=message):
      Qwen25VLConfig.from_hf(raw, **options)


def test_window_index_documented_example():
  # QWEN_VL_NOTES §1.4: grid (1,4,6) with 2x2-merged-token windows -> window_index [0,1,3,4,2,5],
  # cu_window_seqlens [0,16,24] (patch units).
  config = Qwen25VLConfig.from_hf(qwen_tiny.tiny_config_dict())
  order, window_ids = vision_lib.window_index(np.array([[1, 4, 6]]), config.vision)
  np.testing.assert_array_equal(order, [0, 1, 3, 4, 2, 5])
  sizes = np.bincount(window_ids) * config.vision.merge_unit
  np.testing.assert_array_equal(np.concatenate([[0], np.cumsum(sizes)]), [0, 16, 24])


def test_merge_block_positions_documented_example():
  # QWEN_VL_NOTES §1.3: grid (1,4,4), m=2 -> [0,0],[0,1],[1,0],[1,1],[0,2],[0,3],[1,2],[1,3],[2,0],...
  positions = vision_lib.merge_block_positions(np.array([[1, 4, 4]]), 2)
  np.testing.assert_array_equal(positions[:9], [[0, 0], [0, 1], [1, 0], [1, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 0]])


def test_get_rope_index_documented_example():
  # QWEN_VL_NOTES §2.3 worked example (verified against transformers there).
  types = [0] * 4 + [1] * 6 + [0] * 5 + [1] * 6 + [0] * 5
  ids = np.array([[250 if t else 1 for t in types]])
  positions, deltas = get_rope_index(ids, np.array([types]), np.array([[1, 4, 6], [1, 6, 4]]), None, 2)
  expected = [
    [0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 7, 8, 9, 10, 11, 12, 12, 12, 12, 12, 12, 15, 16, 17, 18, 19],
    [0, 1, 2, 3, 4, 4, 4, 5, 5, 5, 7, 8, 9, 10, 11, 12, 12, 13, 13, 14, 14, 15, 16, 17, 18, 19],
    [0, 1, 2, 3, 4, 5, 6, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 12, 13, 12, 13, 15, 16, 17, 18, 19],
  ]
  np.testing.assert_array_equal(positions[:, 0], expected)
  np.testing.assert_array_equal(deltas, [-6])


def test_prepare_vision_inputs_padding_and_errors():
  config = Qwen25VLConfig.from_hf(qwen_tiny.tiny_config_dict())
  grids = np.array([[1, 4, 6], [1, 6, 4]])
  pixels = np.ones((48, 1176), np.float32)
  inputs = vision_lib.prepare_vision_inputs(pixels, grids, config.vision, patch_multiple=64)
  assert inputs.pixel_values.shape == (64, 1176) and inputs.num_tokens == 16
  assert np.all(inputs.window_segment_ids[48:] == -1) and np.all(inputs.frame_segment_ids[48:] == -1)
  np.testing.assert_array_equal(np.bincount(inputs.frame_segment_ids[:48]), [24, 24])
  # Every real patch appears once in window order; padding rows stay at the end.
  np.testing.assert_array_equal(np.sort(inputs.patch_order[:48]), np.arange(48))
  with pytest.raises(ValueError, match="pixel_values shape"):
    vision_lib.prepare_vision_inputs(pixels[:40], grids, config.vision)
  with pytest.raises(ValueError, match="multiple of 4"):
    vision_lib.prepare_vision_inputs(pixels, grids, config.vision, patch_multiple=6)
  with pytest.raises(ValueError, match="spatial_merge_size"):
    vision_lib.prepare_vision_inputs(np.ones((15, 1176)), np.array([[1, 3, 5]]), config.vision)


def test_init_params_matches_abstract_params():
  config = Qwen25VLConfig.from_hf(qwen_tiny.tiny_config_dict(), scan_layers=True)
  params, specs = init_params(config, jax.random.key(0))
  shapes, abstract_specs = abstract_params(config)
  assert jax.tree.map(lambda x: (x.shape, x.dtype), params) == jax.tree.map(lambda s: (s.shape, s.dtype), shapes)
  assert specs == abstract_specs
  layers = params["language_model"]["layers"]
  assert specs["language_model"]["layers"]["self_attn"]["q_proj"]["kernel"] == jax.sharding.PartitionSpec(
    "layers", "embed", "q_heads", "head_dim"
  )
  np.testing.assert_array_equal(layers["input_layernorm"]["scale"], 1.0)
  np.testing.assert_array_equal(layers["self_attn"]["q_proj"]["bias"], 0.0)
  assert 0.01 < float(np.std(layers["mlp"]["up_proj"]["kernel"])) < 0.03
