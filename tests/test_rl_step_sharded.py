"""The RL train step on the fake 8-device CPU mesh (fsdp=4 x tensor=2, and data=8; params, optimizer state and
batch split by the rules) over 2 micro-batches equals the single-device step over the same rows as one batch: same
loss, gradient norm and updated params. Sharding and micro-batch accumulation must each be exact, so the
comparison is to float rounding."""

import copy
import functools

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

import qwen_tiny as qt
from vrrl_jax.models import Qwen25VLConfig, families
from vrrl_jax.parallel import mesh as mesh_lib
from vrrl_jax.parallel import rules as rules_lib
from vrrl_jax.rl import step as step_lib
from vrrl_jax.rl import train_state as ts

RULES = rules_lib.DEFAULT_RULES
OPTIMIZER = ts.OptimizerConfig(learning_rate=1e-2, eps=1e-3, max_grad_norm=0.1)  # clipping active
CONFIG = step_lib.StepConfig(optimizer=OPTIMIZER, logprob_chunk_size=5)
NUM_MICRO_BATCHES = 2
ROWS_PER_MICRO_BATCH = 8  # divisible by the 8 data shards and the 4 fsdp shards


def tiny_config(family: str):
  if family == "qwen2_5_vl":
    raw = qt.tiny_config_dict()
    raw["text_config"]["num_hidden_layers"] = 1
    raw["vision_config"].update(depth=1, fullatt_block_indexes=[0])
    return Qwen25VLConfig.from_hf(raw)
  from test_models_qwen3_vl import QWEN3_TINY

  raw = copy.deepcopy(QWEN3_TINY)
  raw["text_config"]["num_hidden_layers"] = 1
  raw["vision_config"].update(depth=1, deepstack_visual_indexes=[0])
  return families.config_from_hf(raw)


def o1_params(shapes, rng):
  """Random params with O(1) activations (as qwen_tiny.reinit): kernels N(0, 1/fan_in), embeddings N(0, 1), norm
  scales 1 + N(0, 0.1), biases N(0, 0.1)."""

  def draw(path, shape):
    name = jax.tree_util.keystr(path)
    noise = rng.standard_normal(shape.shape)
    if "embed_tokens" in name:
      return noise.astype(np.float32)
    if "scale" in name:
      return (1.0 + 0.1 * noise).astype(np.float32)
    if "bias" in name:
      return (0.1 * noise).astype(np.float32)
    fan_in = np.prod(shape.shape[:-1]) if "kernel" in name else shape.shape[0]
    return (noise / np.sqrt(fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def setup(request):
  config = tiny_config(request.param)
  shapes, specs = families.abstract_params(config)
  rng = np.random.default_rng(0)
  params = o1_params(shapes, rng)
  grids = [(1, 4, 4), (1, 4, 6), (1, 6, 4)]
  batch = NUM_MICRO_BATCHES * ROWS_PER_MICRO_BATCH
  rows = [qt.make_row(rng, [1 + b % 4, grids[b % 3], 3 + b % 5]) for b in range(batch)]
  row_grids = [grids[b % 3] for b in range(batch)]
  ids, attention = qt.left_pad(rows)
  token_mask = np.zeros(ids.shape, np.float32)
  for b in range(batch):
    token_mask[b, ids.shape[1] - (3 + b % 5) :] = 1
  targets, loss_mask = step_lib.next_token_targets(ids, token_mask)
  patches = int(sum(t * h * w for t, h, w in row_grids))
  pixels = rng.standard_normal((patches, config.vision.patch_dim)).astype(np.float32)
  old_logp = -rng.uniform(0.5, 6.0, size=ids.shape).astype(np.float32)
  ref_logp = old_logp + rng.normal(scale=0.3, size=ids.shape).astype(np.float32)
  advantages = rng.normal(size=batch).astype(np.float32)

  def make_batch(num_micro_batches):
    split = functools.partial(step_lib.micro_batch_rows, num_micro_batches=num_micro_batches)
    inputs = step_lib.prepare_micro_batches(
      config, ids, attention, pixels, np.array(row_grids), num_micro_batches, patch_multiple=16
    )
    return step_lib.RLBatch(
      inputs=inputs,
      targets=split(targets),
      loss_mask=split(loss_mask),
      advantages=split(advantages),
      old_logp=split(old_logp),
      ref_logp=split(ref_logp),
    )

  return dict(
    config=config, params=params, specs=specs, one_batch=make_batch(1), micro_batches=make_batch(NUM_MICRO_BATCHES)
  )


def run_step(setup, mesh, batch):
  state = ts.create_train_state(setup["params"], setup["specs"], OPTIMIZER, jax.random.key(0), mesh, RULES)
  shardings = jax.tree.map(lambda x: x.sharding, state)
  train = step_lib.make_train_step(families.build(setup["config"]), mesh, RULES, CONFIG, shardings)
  state, metrics = train(state, batch)
  return state, {k: float(v) for k, v in metrics.items()}


@pytest.fixture(scope="module")
def unsharded(setup):
  state, metrics = run_step(setup, mesh_lib.make_mesh(dict(data=1), devices=jax.devices()[:1]), setup["one_batch"])
  return jax.device_get(state.params), metrics


@pytest.mark.parametrize("mesh_config", [dict(fsdp=4, tensor=2), dict(data=8)], ids=["fsdp4_tensor2", "data8"])
def test_sharded_micro_batched_step_equals_single_device_one_batch(setup, unsharded, mesh_config):
  mesh = mesh_lib.make_mesh(mesh_config)
  state, metrics = run_step(setup, mesh, setup["micro_batches"])
  ref_params, ref_metrics = unsharded
  loss_err = abs(metrics["loss"] - ref_metrics["loss"]) / abs(ref_metrics["loss"])
  norm_err = abs(metrics["grad_norm"] - ref_metrics["grad_norm"]) / ref_metrics["grad_norm"]
  params_err = max(jax.tree.leaves(jax.tree.map(qt.rel_error, jax.device_get(state.params), ref_params)))
  print(
    f"[rl step sharded] {mesh_config}: loss rel {loss_err:.2e}, grad norm rel {norm_err:.2e}, "
    f"params max rel {params_err:.2e}"
  )
  assert metrics["skipped"] == 0 and ref_metrics["grad_norm"] > OPTIMIZER.max_grad_norm
  assert loss_err <= 1e-6 and norm_err <= 1e-5 and params_err <= 1e-6
  q_kernel = state.params["language_model"]["layers_0"]["self_attn"]["q_proj"]["kernel"]
  mu = state.opt_state[1][0].mu["language_model"]["layers_0"]["self_attn"]["q_proj"]["kernel"]
  assert q_kernel.sharding.spec == mu.sharding.spec == PartitionSpec("fsdp", "tensor", None)
  fsdp, tensor = mesh_config.get("fsdp", 1), mesh_config.get("tensor", 1)
  assert (
    q_kernel.addressable_shards[0].data.shape == mu.addressable_shards[0].data.shape == (64 // fsdp, 4 // tensor, 16)
  )


def test_a_reference_in_host_memory_gives_the_same_step_and_log_probs(setup):
  """``reference_memory="host"``: the reference sits in pinned host memory, an update leaves it there unchanged,
  and its log-probs (copied to the devices for the pass) equal those of a device-memory reference."""
  mesh = mesh_lib.make_mesh(dict(fsdp=4, tensor=2))
  states = {
    where: ts.create_train_state(
      setup["params"], setup["specs"], OPTIMIZER, jax.random.key(0), mesh, RULES, reference_memory=where
    )
    for where in ("device", "host")
  }
  kinds = {leaf.sharding.memory_kind for leaf in jax.tree.leaves(states["host"].ref_params)}
  assert kinds == {"pinned_host"}
  assert {leaf.sharding.memory_kind for leaf in jax.tree.leaves(states["host"].params)} == {"device"}
  before = jax.device_get(states["host"].ref_params)
  model = families.build(setup["config"])
  results = {}
  for where, state in states.items():
    shardings = jax.tree.map(lambda x: x.sharding, state)
    logprob = step_lib.make_logprob_fn(model, mesh, RULES, shardings.params, chunk_size=5)
    batch = setup["micro_batches"]
    ref_logp = logprob(ts.on_device(state.ref_params, shardings.params), batch.inputs, batch.targets)
    train = step_lib.make_train_step(model, mesh, RULES, CONFIG, shardings)
    new_state, metrics = train(state, batch)
    results[where] = (np.asarray(ref_logp), {k: float(v) for k, v in metrics.items()}, new_state)
  np.testing.assert_array_equal(results["host"][0], results["device"][0])
  assert results["host"][1] == results["device"][1]
  host_state = results["host"][2]
  assert {leaf.sharding.memory_kind for leaf in jax.tree.leaves(host_state.ref_params)} == {"pinned_host"}
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(host_state.ref_params), before)
  with pytest.raises(ValueError, match="reference_memory"):
    ts.create_train_state(
      setup["params"], setup["specs"], OPTIMIZER, jax.random.key(0), mesh, RULES, reference_memory="hbm"
    )
