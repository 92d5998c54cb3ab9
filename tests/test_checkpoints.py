"""Checkpoint files: Hugging Face safetensors directories <-> params <-> orbax, checked against transformers.

References: the safetensors that transformers' `save_pretrained` writes, transformers' `from_pretrained` and its
logits, and the documented weight transforms (Linear (out, in) -> kernel (in, out), QWEN_VL_NOTES §5.3).
"""

import functools
import json
import os
import shutil

import jax
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

import qwen_tiny as qt
from vrrl_jax import convert
from vrrl_jax.checkpoints import hf as hf_ckpt
from vrrl_jax.checkpoints import orbax_io, pretrained, safetensors_io
from vrrl_jax.checkpoints.safetensors_io import CheckpointError
from vrrl_jax.models import qwen2_5_vl
from vrrl_jax.parallel import mesh as mesh_lib
from vrrl_jax.parallel import rules as rules_lib

load = functools.partial(pretrained.from_pretrained, progress=False)


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def tied(request):
  return request.param


@pytest.fixture(scope="module")
def hf_model(tied):
  return qt.build_hf_model(tie_word_embeddings=tied, seed=3)


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory):
  """What transformers writes (legacy on-disk key layout, tied lm_head left out), plus a companion file."""
  directory = tmp_path_factory.mktemp("hf")
  hf_model.save_pretrained(directory)
  (directory / "chat_template.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
  return str(directory)


@pytest.fixture(scope="module")
def sharded_hf_dir(hf_model, tmp_path_factory):
  directory = tmp_path_factory.mktemp("hf_sharded")
  hf_model.save_pretrained(directory, max_shard_size="200KB")
  return str(directory)


@pytest.fixture(scope="module")
def inputs():
  """Two left-padded rows with one image each (tokens and patches in row-major order)."""
  rng = np.random.default_rng(0)
  grids = [(1, 4, 4), (1, 4, 6)]
  ids, mask = qt.left_pad([qt.make_row(rng, [3, grids[0], 5]), qt.make_row(rng, [2, grids[1], 1])])
  return ids, mask, np.array(grids), qt.random_pixels(grids, rng)


def hf_logits(model, inputs):
  ids, mask, grids, pixels = inputs
  with torch.no_grad():
    return model(
      input_ids=torch.tensor(ids),
      attention_mask=torch.tensor(mask),
      mm_token_type_ids=torch.tensor((ids == qt.IMAGE_TOKEN_ID).astype(np.int64)),
      pixel_values=torch.tensor(pixels),
      image_grid_thw=torch.tensor(grids),
    ).logits.numpy()


def our_logits(model, params, inputs):
  ids, mask, grids, pixels = inputs
  prepared, _ = qwen2_5_vl.prepare_inputs(model.config, ids, mask, pixels, grids)
  forward = jax.jit(functools.partial(model.apply, method=qwen2_5_vl.Qwen25VL.forward))
  return np.asarray(forward({"params": params}, prepared).logits)


def canonical(state_dict):
  return {hf_ckpt.canonical_key(k): v for k, v in state_dict.items()}


def assert_same_tree(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def write_hf_dir(directory, state_dict, config_dict):
  os.makedirs(directory, exist_ok=True)
  safetensors.numpy.save_file(state_dict, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config_dict, f)
  return str(directory)


# ---------------------------------------------------------------------------------------------------------------
# HF -> orbax -> HF


def test_round_trip_reproduces_every_tensor(hf_dir, tied, tmp_path):
  convert.hf_to_orbax(hf_dir, str(tmp_path / "ckpt"), scan_layers=tied)  # the tied model goes through stacked layers
  written = convert.orbax_to_hf(str(tmp_path / "ckpt"), str(tmp_path / "export"))

  original = safetensors_io.read_state_dict(hf_dir)
  exported = safetensors_io.read_state_dict(tmp_path / "export")
  assert all(hf_ckpt.disk_key(hf_ckpt.canonical_key(k)) == k for k in exported)  # on-disk layout
  assert exported.keys() == original.keys()  # so a tied lm_head is left out exactly when transformers leaves it out
  for key, value in original.items():
    assert exported[key].dtype == value.dtype, key
    np.testing.assert_array_equal(exported[key], value, err_msg=key)
  assert set(written) >= {"model.safetensors", "config.json", "chat_template.json", "generation_config.json"}
  for name in ("chat_template.json", "generation_config.json"):
    assert (tmp_path / "export" / name).read_bytes() == open(os.path.join(hf_dir, name), "rb").read()
  original_config = safetensors_io.read_config(hf_dir)
  exported_config = safetensors_io.read_config(tmp_path / "export")
  assert exported_config.pop("torch_dtype") == "float32"
  assert exported_config == original_config


@pytest.mark.parametrize("max_shard_size", ["5GB", "150KB"], ids=["single", "sharded"])
def test_transformers_loads_the_export(hf_model, hf_dir, inputs, tmp_path, max_shard_size):
  convert.hf_to_orbax(hf_dir, str(tmp_path / "ckpt"))
  convert.orbax_to_hf(str(tmp_path / "ckpt"), str(tmp_path / "export"), max_shard_size=max_shard_size)
  files = os.listdir(tmp_path / "export")
  if max_shard_size == "150KB":
    shards = [n for n in files if n.endswith(".safetensors")]
    assert len(shards) > 2 and "model.safetensors.index.json" in files
    for shard in shards:  # each file keeps under the limit (no single tensor here is larger)
      assert os.path.getsize(tmp_path / "export" / shard) <= 150_000 + 10_000  # plus the JSON header
  else:
    assert "model.safetensors" in files and "model.safetensors.index.json" not in files

  reloaded = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "export").eval()
  assert reloaded.config.tie_word_embeddings == hf_model.config.tie_word_embeddings
  if hf_model.config.tie_word_embeddings:
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.language_model.embed_tokens.weight.data_ptr()
  for key, value in hf_model.state_dict().items():
    torch.testing.assert_close(reloaded.state_dict()[key], value, rtol=0, atol=0, msg=key)
  np.testing.assert_array_equal(hf_logits(reloaded, inputs), hf_logits(hf_model, inputs))


def test_export_without_original_config(hf_model, hf_dir, inputs, tmp_path):
  """A checkpoint saved without config.json (e.g. from training) gets a generated one transformers reads."""
  model, params = load(hf_dir)
  orbax_io.save(tmp_path / "ckpt", params, model.config)
  convert.orbax_to_hf(str(tmp_path / "ckpt"), str(tmp_path / "export"))
  reloaded = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "export").eval()
  np.testing.assert_array_equal(hf_logits(reloaded, inputs), hf_logits(hf_model, inputs))


def test_bfloat16_export(hf_model, hf_dir, tmp_path):
  convert.hf_to_orbax(hf_dir, str(tmp_path / "ckpt"))
  convert.orbax_to_hf(str(tmp_path / "ckpt"), str(tmp_path / "export"), dtype="bfloat16")
  config = safetensors_io.read_config(tmp_path / "export")
  assert config["dtype"] == config["torch_dtype"] == "bfloat16"
  reloaded = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "export")
  for key, value in hf_model.state_dict().items():
    assert reloaded.state_dict()[key].dtype == torch.bfloat16, key
    torch.testing.assert_close(reloaded.state_dict()[key], value.to(torch.bfloat16), rtol=0, atol=0, msg=key)


# ---------------------------------------------------------------------------------------------------------------
# from_pretrained


def test_weights_follow_the_documented_transforms(hf_model, hf_dir):
  """A few params against transformers' tensors through the layout rules of QWEN_VL_NOTES §5.3."""
  _, params = load(hf_dir)
  sd = qt.state_dict_numpy(hf_model)
  text, visual = params["language_model"], params["visual"]
  np.testing.assert_array_equal(text["embed_tokens"], sd["model.language_model.embed_tokens.weight"])
  q = sd["model.language_model.layers.1.self_attn.q_proj.weight"]  # (heads * hd, D)
  np.testing.assert_array_equal(text["layers_1"]["self_attn"]["q_proj"]["kernel"], q.T.reshape(64, 4, 16))
  np.testing.assert_array_equal(
    text["layers_1"]["self_attn"]["k_proj"]["bias"],
    sd["model.language_model.layers.1.self_attn.k_proj.bias"].reshape(2, 16),
  )
  o = sd["model.language_model.layers.0.self_attn.o_proj.weight"]  # (D, heads * hd)
  np.testing.assert_array_equal(text["layers_0"]["self_attn"]["o_proj"]["kernel"], o.T.reshape(4, 16, 64))
  conv = sd["model.visual.patch_embed.proj.weight"]  # (Dv, C, T, P, P)
  np.testing.assert_array_equal(visual["patch_embed"]["kernel"], conv.reshape(32, -1).T)
  np.testing.assert_array_equal(
    visual["blocks_2"]["mlp"]["down_proj"]["kernel"], sd["model.visual.blocks.2.mlp.down_proj.weight"].T
  )
  if hf_model.config.tie_word_embeddings:
    assert "lm_head" not in text
  else:
    np.testing.assert_array_equal(text["lm_head"], sd["lm_head.weight"].T)


def test_both_key_layouts_and_sharded_files_give_identical_params(hf_model, hf_dir, sharded_hf_dir, tmp_path):
  legacy = safetensors_io.read_state_dict(hf_dir)
  assert any(k.startswith("visual.") for k in legacy)  # what save_pretrained writes is the legacy layout
  memory_dir = write_hf_dir(tmp_path / "memory", canonical(legacy), safetensors_io.read_config(hf_dir))
  assert any(k.startswith("model.visual.") for k in safetensors_io.read_state_dict(memory_dir))
  assert "model.safetensors.index.json" in os.listdir(sharded_hf_dir)

  _, params = load(hf_dir)
  assert_same_tree(load(memory_dir)[1], params)
  assert_same_tree(load(sharded_hf_dir)[1], params)
  # transformers' own in-memory state_dict (which lists a tied lm_head) reads the same too.
  memory_with_head = write_hf_dir(
    tmp_path / "memory_with_head", qt.state_dict_numpy(hf_model), safetensors_io.read_config(hf_dir)
  )
  assert_same_tree(load(memory_with_head)[1], params)


@pytest.mark.parametrize(
  "scan_layers,rules_name",
  [(False, "DEFAULT_RULES"), (True, "DECODE_RULES")],
  ids=["unscanned-default", "scanned-decode"],
)
def test_loading_onto_a_mesh(sharded_hf_dir, tmp_path, scan_layers, rules_name):
  rules = getattr(rules_lib, rules_name)
  mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  model, params = load(sharded_hf_dir, mesh=mesh, rules=rules, scan_layers=scan_layers)
  _, host_params = load(sharded_hf_dir, scan_layers=scan_layers)
  expected = mesh_lib.param_shardings(qwen2_5_vl.abstract_params(model.config)[1], mesh, rules)
  for leaf, sharding in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), (leaf.sharding, sharding)
  assert_same_tree(params, host_params)
  embed = params["language_model"]["embed_tokens"]  # (vocab 256, embed 64): vocab over tensor, embed over fsdp
  assert embed.addressable_shards[0].data.shape == ((128, 32) if rules_name == "DEFAULT_RULES" else (128, 64))

  # The orbax copy restores onto the same shardings, also into the other layer layout.
  orbax_io.save(tmp_path / "ckpt", host_params, model.config)
  _, restored = load(tmp_path / "ckpt", mesh=mesh, rules=rules, scan_layers=not scan_layers)
  _, host_other = load(sharded_hf_dir, scan_layers=not scan_layers)
  assert_same_tree(restored, host_other)
  _, restored = load(tmp_path / "ckpt", mesh=mesh, rules=rules)
  for leaf, sharding in zip(jax.tree.leaves(restored), jax.tree.leaves(expected)):
    assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
  assert_same_tree(restored, params)


def test_entry_block_reads_any_shard():
  """Every block of every kind of tensor equals the same block of the fully converted tensor."""
  rng = np.random.default_rng(0)
  cases = [
    hf_ckpt.Entry("q", ("q",), "linear", (4 * 6, 10), (10, 4, 6)),  # Linear to heads
    hf_ckpt.Entry("o", ("o",), "linear", (10, 4 * 6), (4, 6, 10)),  # heads to Linear
    hf_ckpt.Entry("qkv", ("qkv",), "linear", (3 * 2 * 4, 8), (8, 3, 2, 4)),
    hf_ckpt.Entry("conv", ("conv",), "conv", (6, 3, 2, 2, 2), (24, 6)),
    hf_ckpt.Entry("bias", ("bias",), "copy", (3 * 2 * 4,), (3, 2, 4)),
    hf_ckpt.Entry("embed", ("embed",), "copy", (12, 8), (12, 8)),
  ]
  for entry in cases:
    weight = rng.standard_normal(entry.hf_shape).astype(np.float32)
    if entry.kind == "linear":
      full = weight.T.reshape(entry.shape)
    elif entry.kind == "conv":
      full = weight.reshape(weight.shape[0], -1).T
    else:
      full = weight.reshape(entry.shape)
    for _ in range(20):
      index = []
      for n in entry.shape:
        a = int(rng.integers(0, n))
        index.append(slice(a, int(rng.integers(a + 1, n + 1))))
      block = pretrained.entry_block(entry, weight, tuple(index))
      np.testing.assert_array_equal(block, full[tuple(index)], err_msg=f"{entry.hf_key} {index}")


def test_dtype_casts(hf_model, hf_dir, tmp_path):
  model, params = load(hf_dir, dtype="bfloat16")
  assert model.config.param_dtype == model.config.dtype == "bfloat16"
  sd = qt.state_dict_numpy(hf_model)
  embed = params["language_model"]["embed_tokens"]
  assert embed.dtype == ml_dtypes.bfloat16
  rounded = torch.tensor(sd["model.language_model.embed_tokens.weight"]).to(torch.bfloat16).float().numpy()
  np.testing.assert_array_equal(np.asarray(embed, np.float32), rounded)
  assert all(leaf.dtype == ml_dtypes.bfloat16 for leaf in jax.tree.leaves(params))

  _, fp32 = load(hf_dir)
  orbax_io.save(tmp_path / "ckpt", fp32, load(hf_dir)[0].config)
  model, restored = load(tmp_path / "ckpt", dtype="bfloat16")
  assert model.config.param_dtype == "bfloat16"
  assert_same_tree(restored, params)
  model, restored = load(tmp_path / "ckpt")  # default: as saved
  assert model.config.param_dtype == "float32"
  assert_same_tree(restored, fp32)


def test_our_forward_matches_transformers(hf_model, hf_dir, inputs):
  model, params = load(hf_dir)
  error = qt.rel_error(our_logits(model, params, inputs), hf_logits(hf_model, inputs), inputs[1])
  print(f"relative logits error {error:.2e}")
  assert error <= 1e-4


# ---------------------------------------------------------------------------------------------------------------
# Malformed inputs


@pytest.fixture(scope="module")
def untied_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("untied")
  qt.build_hf_model(tie_word_embeddings=False, seed=4).save_pretrained(directory)
  return str(directory)


def _edit_tensors(edit):
  def make(source, target):
    state_dict = safetensors_io.read_state_dict(source)
    edit(state_dict)
    write_hf_dir(target, state_dict, safetensors_io.read_config(source))

  return make


def _edit_config(edit):
  def make(source, target):
    shutil.copytree(source, target)
    config = safetensors_io.read_config(source)
    edit(config)
    with open(os.path.join(target, "config.json"), "w") as f:
      json.dump(config, f)

  return make


def _without_config(source, target):
  shutil.copytree(source, target)
  os.remove(os.path.join(target, "config.json"))


def _truncated(source, target):
  shutil.copytree(source, target)
  path = os.path.join(target, "model.safetensors")
  data = open(path, "rb").read()
  open(path, "wb").write(data[: len(data) // 2])


def _add(key, value):
  return lambda sd: sd.__setitem__(key, value)


def _tied_with_a_different_head(source, target):
  """A tied config whose checkpoint still holds an lm_head that is not the embedding."""
  state_dict = safetensors_io.read_state_dict(source)
  config = safetensors_io.read_config(source)
  config["tie_word_embeddings"] = True
  write_hf_dir(target, state_dict, config)


MALFORMED = {
  "missing config.json": (_without_config, "holds safetensors files but no config.json"),
  "unknown model_type": (
    _edit_config(lambda c: c.__setitem__("model_type", "llama")),
    r"config.json: unknown model_type 'llama'; this version supports \['qwen2_5_vl', 'qwen3_vl'\]",
  ),
  "missing tensor": (
    _edit_tensors(lambda sd: sd.pop("model.norm.weight")),
    r"missing \['model.language_model.norm.weight'\]",
  ),
  "extra tensor": (
    _edit_tensors(_add("model.layers.0.mlp.extra.weight", np.ones(3, np.float32))),
    r"unexpected \['model.layers.0.mlp.extra.weight'\]",
  ),
  "wrong shape": (
    _edit_tensors(_add("visual.blocks.1.norm2.weight", np.ones(33, np.float32))),
    r"visual.blocks.1.norm2.weight has shape \(33,\), expected \(32,\)",
  ),
  "both layouts": (_edit_tensors(_add("model.language_model.norm.weight", np.ones(64, np.float32))), "twice"),
  "truncated file": (_truncated, "model.safetensors: unreadable safetensors file, truncated or corrupt"),
  "tied head differs": (_tied_with_a_different_head, "differs from the token embedding"),
  "bad dtype": (_edit_config(lambda c: c.__setitem__("dtype", "float16")), "'float16' is not supported"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_hf_dirs_raise_clear_errors(untied_dir, tmp_path, case):
  make, message = MALFORMED[case]
  make(untied_dir, tmp_path / "bad")
  with pytest.raises(ValueError, match=message):  # CheckpointError is a ValueError
    load(tmp_path / "bad")


def test_malformed_sharded_and_orbax_dirs_raise_clear_errors(untied_dir, tmp_path):
  model, params = load(untied_dir)
  with pytest.raises(CheckpointError, match="not a directory"):
    load(tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(CheckpointError, match="is neither a Hugging Face checkpoint"):
    load(tmp_path / "empty")

  # Sharded: a shard listed in the index is gone.
  sharded = tmp_path / "sharded"
  model_hf = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(untied_dir)
  model_hf.save_pretrained(sharded, max_shard_size="200KB")
  os.remove(sharded / "model-00002-of-00005.safetensors")
  with pytest.raises(CheckpointError, match=r"lists shard files that are not in the directory: \['model-00002"):
    load(sharded)

  # Orbax: our config file missing, or describing other shapes than the stored arrays.
  orbax_io.save(tmp_path / "ckpt", params, model.config)
  shutil.copytree(tmp_path / "ckpt", tmp_path / "bare")
  os.remove(tmp_path / "bare" / orbax_io.CONFIG_FILE)
  with pytest.raises(CheckpointError, match="holds an orbax checkpoint but no vrrl_config.json"):
    load(tmp_path / "bare")
  with pytest.raises(CheckpointError, match="holds an orbax checkpoint but no vrrl_config.json"):
    load(tmp_path / "bare" / orbax_io.PARAMS_DIR)
  record = json.loads((tmp_path / "ckpt" / orbax_io.CONFIG_FILE).read_text())
  record["hf_config"]["text_config"]["intermediate_size"] = 96
  (tmp_path / "ckpt" / orbax_io.CONFIG_FILE).write_text(json.dumps(record))
  with pytest.raises(
    CheckpointError,
    match=r"language_model/layers_0/mlp/down_proj/kernel has shape \(128, 64\), "
    r"expected \(96, 64\)",
  ):
    load(tmp_path / "ckpt")
  with pytest.raises(CheckpointError, match="already holds a checkpoint"):
    orbax_io.save(tmp_path / "ckpt", params, model.config)
  # Both kinds of config in one directory is ambiguous.
  shutil.copyfile(os.path.join(untied_dir, "config.json"), tmp_path / "ckpt" / "config.json")
  with pytest.raises(CheckpointError, match="holds both"):
    load(tmp_path / "ckpt")
