"""Greedy generation equals transformers' generate(), and repeated calls in the same buckets compile nothing.

Same weights (the transformers state_dict converted with params_from_state_dict), re-initialised so activations
are O(1) and the argmax is not degenerate. The prompts have different lengths and different numbers and sizes of
images; transformers gets them left-padded, the sampler right-padded into per-row cache offsets, and each prompt is
prefilled once and fanned out to two samples.
"""

import jax
import numpy as np
import pytest
import torch

import qwen_tiny as qt
from vrrl_jax.checkpoints import hf as hf_ckpt
from vrrl_jax.models import families
from vrrl_jax.sampling.buckets import Buckets
from vrrl_jax.sampling.sampler import LENGTH, GenerationState, Sampler, SamplingConfig, Segment

NEW_TOKENS = 32
GRIDS = [[(1, 4, 6)], [(1, 6, 4), (1, 4, 4)], [(1, 4, 4)]]
PIECES = [[3, GRIDS[0][0], 2], [2, GRIDS[1][0], 3, GRIDS[1][1], 1], [9, GRIDS[2][0], 5]]


@pytest.fixture(scope="module", params=qt.FAMILIES)
def setup(request):
  hf_model = qt.build_hf_model(seed=3, family=request.param)
  config = families.config_from_hf(hf_model.config.to_dict())
  params = hf_ckpt.params_from_state_dict(hf_model.state_dict(), config)
  return hf_model, config, params


def make_prompts(seed, config):
  rng = np.random.default_rng(seed)
  return [
    Segment(np.array(qt.make_row(rng, pieces)), qt.random_pixels(grids, rng, config.model_type), np.array(grids))
    for pieces, grids in zip(PIECES, GRIDS)
  ]


def test_greedy_equals_transformers_generate(setup):
  hf_model, config, params = setup
  prompts = make_prompts(0, config)
  ids, mask = qt.left_pad([p.input_ids.tolist() for p in prompts])
  with torch.no_grad():
    out = hf_model.generate(
      input_ids=torch.tensor(ids),
      attention_mask=torch.tensor(mask),
      mm_token_type_ids=torch.tensor((ids == qt.IMAGE_TOKEN_ID).astype(np.int64)),
      pixel_values=torch.tensor(np.concatenate([p.pixel_values for p in prompts])),
      image_grid_thw=torch.tensor(np.concatenate([p.image_grid_thw for p in prompts])),
      max_new_tokens=NEW_TOKENS,
      do_sample=False,
      pad_token_id=qt.PAD_TOKEN_ID,
      output_logits=True,
      return_dict_in_generate=True,
    )
  expected = out.sequences[:, ids.shape[1] :].numpy()
  hf_log_probs = torch.log_softmax(torch.stack(out.logits, 1), -1).numpy()  # [B, T, V]
  assert expected.shape == (3, NEW_TOKENS)
  assert len(set(expected.ravel().tolist())) > 20  # not a degenerate repetition

  sampler = Sampler(config, buckets=Buckets(max_prefill_patches=40))  # prefill in three calls
  state, turn = sampler.start(
    params, prompts, SamplingConfig(temperature=0, max_new_tokens=NEW_TOKENS), jax.random.key(0), n_per_prompt=2
  )
  np.testing.assert_array_equal(turn.sample_ids, np.arange(6))
  for sample, tokens, log_probs, reason in zip(turn.sample_ids, turn.tokens, turn.log_probs, turn.finish_reasons):
    prompt = sample // 2
    np.testing.assert_array_equal(tokens, expected[prompt])
    np.testing.assert_allclose(log_probs, hf_log_probs[prompt, np.arange(NEW_TOKENS), tokens], atol=1e-4)
    assert reason == LENGTH
  np.testing.assert_array_equal(state.lengths[:6], np.repeat([len(p) for p in prompts], 2) + NEW_TOKENS)


def test_same_buckets_compile_once(setup):
  _, config, params = setup
  compiles = []

  def listener(event, duration, **kwargs):
    if event.endswith("backend_compile_duration"):
      compiles.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    check_compile_counts(config, params, compiles)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def check_compile_counts(config, params, compiles):
  sampler = Sampler(config)
  sampling = SamplingConfig(temperature=1.0, max_new_tokens=4, stop_token_ids=(7,))
  key = jax.random.key(0)
  sampler.start(params, make_prompts(1, config), sampling, key, n_per_prompt=2)
  programs, first_compiles = sampler.compile_log.total, len(compiles)
  assert programs == sampler.compile_log.total == sum(sampler.compile_log.counts.values())
  # Different prompts and images, same buckets: no new program, no backend compilation.
  state, turn = sampler.start(params, make_prompts(2, config), sampling, key, n_per_prompt=2)
  assert sampler.compile_log.total == programs
  assert len(compiles) == first_compiles, compiles[first_compiles:]
  assert [len(t) for t in turn.tokens] and all(len(t) <= 4 for t in turn.tokens)


def test_bad_calls_raise(setup):
  _, config, params = setup
  sampler = Sampler(config)
  sampling = SamplingConfig(max_new_tokens=4)
  prompts = make_prompts(3, config)
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="non-empty list of Segments"):
    sampler.start(params, [], sampling, key)
  with pytest.raises(ValueError, match="n_per_prompt"):
    sampler.start(params, prompts, sampling, key, n_per_prompt=0)
  with pytest.raises(ValueError, match="budgets must be in"):
    sampler.start(params, prompts, sampling, key, max_new_tokens=[5, 1, 1])
  with pytest.raises(ValueError, match="one budget per sample"):
    sampler.start(params, prompts, sampling, key, max_new_tokens=[1, 1])
  state = GenerationState(
    cache=None,
    sample_ids=np.array([0, 1, -1, -1]),
    lengths=np.array([9, 9, 0, 0]),
    next_positions=np.array([9, 9, 0, 0]),
  )
  with pytest.raises(ValueError, match=r"samples \[2\] are not in this generation state"):
    sampler.extend(params, state, [0, 2], prompts[:2], sampling, key)
  with pytest.raises(ValueError, match="repeat"):
    sampler.extend(params, state, [0, 0], prompts[:2], sampling, key)
  with pytest.raises(ValueError, match="one segment per sample"):
    sampler.extend(params, state, [0, 1], prompts[:1], sampling, key)
  with pytest.raises(ValueError, match="together"):
    Segment(np.arange(5), np.zeros((4, qt.PATCH_DIM), np.float32), None)
  with pytest.raises(ValueError, match="non-empty 1-D integer"):
    Segment(np.zeros((2, 3), np.int32))
