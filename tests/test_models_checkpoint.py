"""transformers state_dict <-> params: both key layouts, tied/untied, scanned/unscanned, clear errors."""

import jax
import numpy as np
import pytest
import safetensors.numpy

import qwen_tiny as qt
from vrrl_jax.checkpoints import hf as hf_ckpt
from vrrl_jax.models import Qwen25VLConfig, abstract_params


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def hf_model(request):
  return qt.build_hf_model(tie_word_embeddings=request.param, seed=5)


@pytest.fixture(scope="module")
def saved_state_dict(hf_model, tmp_path_factory):
  """What transformers writes to disk (the Hub layout)."""
  directory = tmp_path_factory.mktemp("qwen_tiny")
  hf_model.save_pretrained(directory)
  return safetensors.numpy.load_file(str(directory / "model.safetensors"))


@pytest.mark.parametrize("scan_layers", [False, True])
def test_params_have_the_model_structure(hf_model, scan_layers):
  config = Qwen25VLConfig.from_hf(hf_model.config, scan_layers=scan_layers)
  params = hf_ckpt.params_from_state_dict(hf_model.state_dict(), config)
  shapes, _ = abstract_params(config)
  assert jax.tree.structure(params) == jax.tree.structure(shapes)
  assert jax.tree.map(np.shape, params) == jax.tree.map(lambda s: s.shape, shapes)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_round_trip_both_layouts(hf_model, saved_state_dict, scan_layers):
  config = Qwen25VLConfig.from_hf(hf_model.config, scan_layers=scan_layers)
  memory = qt.state_dict_numpy(hf_model)
  params = hf_ckpt.params_from_state_dict(memory, config)
  from_disk = hf_ckpt.params_from_state_dict(saved_state_dict, config)
  jax.tree.map(np.testing.assert_array_equal, params, from_disk)

  disk_out = hf_ckpt.state_dict_from_params(params, config, layout="disk")
  assert disk_out.keys() == saved_state_dict.keys()  # includes: tied lm_head absent
  for key, value in saved_state_dict.items():
    np.testing.assert_array_equal(disk_out[key], value, err_msg=key)

  memory_out = hf_ckpt.state_dict_from_params(params, config, layout="memory")
  if config.tie_word_embeddings:
    assert "lm_head.weight" in memory and "lm_head.weight" not in memory_out
    memory.pop("lm_head.weight")
  assert memory_out.keys() == memory.keys()
  for key, value in memory.items():
    np.testing.assert_array_equal(memory_out[key], value, err_msg=key)


def test_bad_state_dicts_raise(hf_model):
  config = Qwen25VLConfig.from_hf(hf_model.config)
  good = qt.state_dict_numpy(hf_model)
  key = "model.language_model.layers.1.self_attn.k_proj.weight"

  missing = {k: v for k, v in good.items() if k != key}
  with pytest.raises(ValueError, match=r"missing: .*layers\.1\.self_attn\.k_proj\.weight"):
    hf_ckpt.params_from_state_dict(missing, config)

  with pytest.raises(ValueError, match=r"unexpected: model\.language_model\.layers\.2\.mlp"):
    hf_ckpt.params_from_state_dict({**good, "model.language_model.layers.2.mlp.up_proj.weight": good[key]}, config)

  with pytest.raises(ValueError, match=r"k_proj\.weight: shape \(32, 32\), expected \(32, 64\)"):
    hf_ckpt.params_from_state_dict({**good, key: good[key][:, :32]}, config)

  with pytest.raises(ValueError, match="both the in-memory and the on-disk layout"):
    hf_ckpt.params_from_state_dict({**good, "model.norm.weight": good["model.language_model.norm.weight"]}, config)

  if config.tie_word_embeddings:
    with pytest.raises(ValueError, match="lm_head.weight differs"):
      hf_ckpt.params_from_state_dict({**good, "lm_head.weight": good["lm_head.weight"] + 1}, config)
  else:
    tied = Qwen25VLConfig.from_hf(hf_model.config.to_dict() | {"tie_word_embeddings": True})
    with pytest.raises(ValueError, match="lm_head.weight differs"):
      hf_ckpt.params_from_state_dict(good, tied)


def test_bad_params_raise(hf_model):
  config = Qwen25VLConfig.from_hf(hf_model.config)
  params = hf_ckpt.params_from_state_dict(hf_model.state_dict(), config)
  params["language_model"]["norm"]["scale"] = params["language_model"]["norm"]["scale"][:10]
  del params["visual"]["merger"]["mlp_0"]["bias"]
  with pytest.raises(ValueError, match=r"missing: visual/merger/mlp_0/bias.*language_model/norm/scale: shape \(10,\)"):
    hf_ckpt.state_dict_from_params(params, config)
  with pytest.raises(ValueError, match="layout"):
    hf_ckpt.state_dict_from_params(params, config, layout="hub")
