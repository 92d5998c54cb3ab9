"""The sampler on the fake 8-device CPU mesh gives the same tokens and log-probs as on one device.

Batch over the rules' batch axes, parameters and KV-cache heads over tensor (DECODE_RULES); a prompt turn with
group fan-out and a continuation turn with images, greedy and with temperature + top-p sampling (jax's random bits
do not depend on the sharding, so the same seed draws the same tokens).
"""

import jax
import numpy as np
import pytest

import qwen_tiny as qt
from vrrl_jax.models import Qwen25VLConfig, abstract_params
from vrrl_jax.parallel import mesh as mesh_lib
from vrrl_jax.parallel import rules as rules_lib
from vrrl_jax.sampling.buckets import Buckets
from vrrl_jax.sampling.sampler import Sampler, SamplingConfig, Segment

BUCKETS = Buckets(min_batch=8)  # both turns in one batch bucket: fewer programs to compile

SAMPLINGS = {
  "greedy": SamplingConfig(temperature=0, max_new_tokens=8, stop_token_ids=(5,)),
  "top_p": SamplingConfig(
    temperature=1.0, top_p=0.9, max_new_tokens=8, stop_token_ids=(5,), suppressed_token_ids=(qt.IMAGE_TOKEN_ID,)
  ),
}


@pytest.fixture(scope="module")
def setup():
  config = Qwen25VLConfig.from_hf(qt.tiny_config_dict())
  shapes, specs = abstract_params(config)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(np.float32), shapes)
  grids = [[(1, 4, 6)], [(1, 6, 4), (1, 4, 4)], [(1, 4, 4)]]
  pieces = [[3, grids[0][0], 2], [2, grids[1][0], 3, grids[1][1], 1], [9, grids[2][0], 5]]
  prompts = [
    Segment(np.array(qt.make_row(rng, p)), qt.random_pixels(g, rng), np.array(g)) for p, g in zip(pieces, grids)
  ]
  feedback = [
    Segment(
      np.array(qt.make_row(rng, [2, (1, 4, 4), 1 + i])), qt.random_pixels([(1, 4, 4)], rng), np.array([(1, 4, 4)])
    )
    for i in range(3)
  ]
  return dict(
    config=config,
    params=params,
    specs=specs,
    prompts=prompts,
    feedback=feedback,
    unsharded=Sampler(config, buckets=BUCKETS),
  )


def play(sampler, params, prompts, feedback, sampling):
  state, first = sampler.start(params, prompts, sampling, jax.random.key(0), n_per_prompt=2)
  state, second = sampler.extend(params, state, [4, 0, 3], feedback, sampling, jax.random.key(1))
  return state, [first, second]


@pytest.mark.parametrize(
  "mesh_config, sampling_name",
  [(dict(data=2, fsdp=2, tensor=2), "greedy"), (dict(data=4, tensor=2), "top_p")],
  ids=["data2_fsdp2_tensor2-greedy", "data4_tensor2-top_p"],
)
def test_sharded_sampling_equals_unsharded(setup, mesh_config, sampling_name):
  config, params, specs, prompts, feedback = (setup[k] for k in ("config", "params", "specs", "prompts", "feedback"))
  sampling = SAMPLINGS[sampling_name]
  _, reference = play(setup["unsharded"], params, prompts, feedback, sampling)

  rules = rules_lib.DECODE_RULES
  mesh = mesh_lib.make_mesh(mesh_config)
  sharded_params = mesh_lib.shard_params(params, specs, mesh, rules)
  sampler = Sampler(config, mesh=mesh, rules=rules, buckets=BUCKETS)
  state, turns = play(sampler, sharded_params, prompts, feedback, sampling)

  expected_cache = mesh_lib.cache_shardings(mesh, rules)
  assert state.cache.key.sharding.is_equivalent_to(expected_cache.key, 5)
  assert state.cache.lengths.sharding.is_equivalent_to(expected_cache.lengths, 1)
  assert state.cache.key.shape[1] % sampler.batch_multiple == 0
  worst = 0.0
  for ours, theirs in zip(turns, reference):
    np.testing.assert_array_equal(ours.sample_ids, theirs.sample_ids)
    assert ours.finish_reasons == theirs.finish_reasons
    for a, b, la, lb in zip(ours.tokens, theirs.tokens, ours.log_probs, theirs.log_probs):
      np.testing.assert_array_equal(a, b)
      np.testing.assert_allclose(la, lb, atol=1e-5)
      worst = max(worst, float(np.abs(la - lb).max(initial=0)))
  print(f"[sampling] {mesh_config} {sampling_name}: tokens equal, log-prob abs {worst:.1e}")
