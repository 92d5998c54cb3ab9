"""Sharded forward on the fake 8-device CPU mesh equals the single-device forward."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

import qwen_tiny as qt
from vrrl_jax.models import ModelOutput, families
from vrrl_jax.parallel import mesh as mesh_lib
from vrrl_jax.parallel import rules as rules_lib

BATCH = 8


@pytest.fixture(scope="module", params=qt.FAMILIES)
def setup(request):
  config = families.config_from_hf(qt.tiny_config_dict(family=request.param))
  shapes, specs = families.abstract_params(config)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(np.float32), shapes)
  grid = (1, 4, 4)
  rows = [qt.make_row(rng, [1 + b, grid, 2]) for b in range(BATCH)]
  ids, mask = qt.left_pad(rows)
  pixels = qt.random_pixels([grid] * BATCH, rng, request.param)
  inputs, _ = families.prepare_inputs(config, ids, mask, pixels, np.array([grid] * BATCH), patch_multiple=128)
  model = families.build(config)
  forward = lambda params, inputs: model.apply({"params": params}, inputs, method="forward").logits
  reference = np.asarray(jax.jit(forward)(params, inputs))
  return dict(config=config, params=params, specs=specs, inputs=inputs, mask=mask, forward=forward, reference=reference)


def input_shardings(mesh, inputs, rules):
  replicated = NamedSharding(mesh, PartitionSpec())
  rows = mesh_lib.data_sharding(mesh, rules)
  return inputs.replace(
    input_ids=rows,
    segment_ids=rows,
    positions=mesh_lib.data_sharding(mesh, rules, ndim=3, batch_axis=1),
    vision=jax.tree.map(lambda _: replicated, inputs.vision),
  )


@pytest.mark.parametrize(
  "mesh_config",
  [dict(fsdp=4, tensor=2), dict(data=8), dict(data=2, fsdp=-1, tensor=2)],
  ids=["fsdp4_tensor2", "data8", "data2_fsdp2_tensor2"],
)
def test_sharded_forward_equals_unsharded(setup, mesh_config):
  rules = rules_lib.DEFAULT_RULES
  mesh = mesh_lib.make_mesh(mesh_config)
  params = mesh_lib.shard_params(setup["params"], setup["specs"], mesh, rules)
  in_shardings = (mesh_lib.param_shardings(setup["specs"], mesh, rules), input_shardings(mesh, setup["inputs"], rules))
  out_sharding = mesh_lib.data_sharding(mesh, rules, ndim=3)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    logits = jax.jit(setup["forward"], in_shardings=in_shardings, out_shardings=out_sharding)(params, setup["inputs"])
  assert logits.sharding == out_sharding
  err = qt.rel_error(logits, setup["reference"], setup["mask"])
  print(f"[parallel] {mesh_config}: rel {err:.2e}")
  assert err <= 1e-5


def test_param_placement_follows_rules(setup):
  mesh = mesh_lib.make_mesh(dict(fsdp=4, tensor=2))
  params = mesh_lib.shard_params(setup["params"], setup["specs"], mesh)
  q_kernel = params["language_model"]["layers_0"]["self_attn"]["q_proj"]["kernel"]  # (embed, q_heads, head_dim)
  assert q_kernel.sharding.spec == PartitionSpec("fsdp", "tensor", None)
  assert q_kernel.addressable_shards[0].data.shape == (64 // 4, 4 // 2, 16)
  embed = params["language_model"]["embed_tokens"]  # (vocab, embed)
  assert embed.sharding.spec == PartitionSpec("tensor", "fsdp")
  norm = params["language_model"]["norm"]["scale"]
  assert norm.sharding.spec == PartitionSpec(None)
  decode = mesh_lib.param_shardings(setup["specs"], mesh, rules_lib.DECODE_RULES)
  assert decode["language_model"]["layers_0"]["self_attn"]["q_proj"]["kernel"].spec == PartitionSpec(
    None, "tensor", None
  )


def test_sharded_cached_prefill_with_decode_rules(setup):
  rules = rules_lib.DECODE_RULES
  mesh = mesh_lib.make_mesh(dict(data=2, fsdp=2, tensor=2))
  params = mesh_lib.shard_params(setup["params"], setup["specs"], mesh, rules)
  cache_sharding = mesh_lib.cache_shardings(mesh, rules)
  cache = jax.device_put(families.init_cache(setup["config"], BATCH, max_len=32), cache_sharding)
  model = families.build(setup["config"])
  prefill = lambda params, inputs, cache: model.apply({"params": params}, inputs, cache, method="forward")
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    out = jax.jit(
      prefill,
      in_shardings=(
        mesh_lib.param_shardings(setup["specs"], mesh, rules),
        input_shardings(mesh, setup["inputs"], rules),
        cache_sharding,
      ),
      out_shardings=ModelOutput(logits=mesh_lib.data_sharding(mesh, rules, ndim=3), cache=cache_sharding),
    )(params, setup["inputs"], cache)
  assert out.cache.key.sharding.spec == PartitionSpec(None, ("data", "fsdp"), None, "tensor", None)
  err = qt.rel_error(out.logits, setup["reference"], setup["mask"])
  print(f"[parallel] cached prefill, decode rules: rel {err:.2e}")
  assert err <= 1e-5


def test_make_mesh():
  mesh = mesh_lib.make_mesh(dict(data=2, fsdp=-1, tensor=2))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert dict(mesh_lib.make_mesh(dict(fsdp=-1)).shape) == {"data": 1, "fsdp": 8, "tensor": 1}
  for bad, message in [
    (dict(data=3), "needs 3 devices"),
    (dict(data=-1, fsdp=-1), "at most one"),
    (dict(data=3, fsdp=-1), "cannot be split"),
    (dict(pipeline=2), "unknown mesh axes"),
    (dict(data=0), "positive"),
  ]:
    with pytest.raises(ValueError, match=message):
      mesh_lib.make_mesh(bad)
