"""Sampling draws from softmax(logits / T) truncated by top-k then top-p, and reports log-probs under it.

The reference distribution is written out here with plain numpy from the definitions (sort descending, keep the k
most likely; then keep the shortest most-likely prefix whose mass reaches p; renormalise). Empirical frequencies of
many draws with a fixed seed are chi-square tested against it, tokens outside its support are never drawn, and the
returned log-probs equal log of the reference probability of the drawn token.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vrrl_jax.sampling.sampler import SamplingConfig, sample_tokens, sampling_log_probs

DRAWS = 40000
LOGITS = np.array([2.0, 1.1, 0.3, -0.4, 1.7, -1.5, 0.9, 0.0, -0.8, 2.4, -2.2, 0.6], np.float32)


def reference_distribution(logits, temperature=1.0, top_k=0, top_p=1.0, suppressed=()):
  scores = logits.astype(np.float64) / temperature
  scores[list(suppressed)] = -np.inf
  probs = np.exp(scores - scores.max())
  probs /= probs.sum()
  order = np.argsort(-probs, kind="stable")
  keep = np.zeros(len(probs), bool)
  keep[order[:top_k] if top_k else order] = True
  probs = np.where(keep, probs, 0.0)
  probs /= probs.sum()
  if top_p < 1:
    sorted_probs = probs[order]
    shortest = int(np.searchsorted(np.cumsum(sorted_probs), top_p) + 1)  # first prefix with mass >= top_p
    nucleus = np.zeros(len(probs), bool)
    nucleus[order[:shortest]] = True
    probs = np.where(nucleus, probs, 0.0)
    probs /= probs.sum()
  return probs


CASES = {
  "temperature": dict(temperature=0.7),
  "hot": dict(temperature=1.6),
  "top_p": dict(temperature=1.3, top_p=0.8),
  "top_k": dict(temperature=1.0, top_k=4),
  "top_k_top_p": dict(temperature=0.9, top_k=6, top_p=0.7),
  "suppressed": dict(temperature=1.0, top_p=0.9, suppressed_token_ids=(9, 0)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_empirical_frequencies_and_log_probs(name):
  kwargs = CASES[name]
  config = SamplingConfig(**kwargs)
  expected = reference_distribution(
    LOGITS,
    kwargs.get("temperature", 1.0),
    kwargs.get("top_k", 0),
    kwargs.get("top_p", 1.0),
    kwargs.get("suppressed_token_ids", ()),
  )
  logits = jnp.broadcast_to(jnp.asarray(LOGITS), (DRAWS, LOGITS.size))
  tokens, log_probs = jax.jit(lambda l, k: sample_tokens(l, k, config))(logits, jax.random.key(42))
  tokens, log_probs = np.asarray(tokens), np.asarray(log_probs)

  counts = np.bincount(tokens, minlength=LOGITS.size)
  support = expected > 0
  assert counts[~support].sum() == 0, f"drew tokens outside the support: {np.flatnonzero(counts * ~support)}"
  assert support.sum() >= 2
  chi2, p_value = stats.chisquare(counts[support], DRAWS * expected[support])
  print(f"[sampling] {name}: support {support.sum()}, chi2 {chi2:.1f}, p {p_value:.3f}")
  assert p_value > 1e-3
  np.testing.assert_allclose(log_probs, np.log(expected[tokens]), rtol=1e-5, atol=1e-6)
  # The full log-prob table agrees too (-inf outside the support).
  table = np.asarray(sampling_log_probs(jnp.asarray(LOGITS)[None], config))[0]
  np.testing.assert_allclose(np.exp(table), expected, atol=1e-6)


def test_top_p_keeps_the_token_that_crosses_the_threshold():
  logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], np.float32))
  for top_p, kept in ((0.5, 1), (0.51, 2), (0.8, 2), (0.81, 3), (1.0, 4)):
    table = np.asarray(sampling_log_probs(jnp.asarray(logits)[None], SamplingConfig(top_p=top_p)))[0]
    assert np.isfinite(table).sum() == kept, (top_p, table)


def test_greedy_takes_argmax_and_reports_model_log_prob():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((64, 50)).astype(np.float32)
  config = SamplingConfig(temperature=0, suppressed_token_ids=(3,))
  tokens, log_probs = sample_tokens(jnp.asarray(logits), jax.random.key(0), config)
  masked = logits.astype(np.float64)
  masked[:, 3] = -np.inf
  np.testing.assert_array_equal(tokens, masked.argmax(-1))
  log_softmax = masked - np.logaddexp.reduce(masked, axis=-1, keepdims=True)
  np.testing.assert_allclose(log_probs, log_softmax[np.arange(64), np.asarray(tokens)], rtol=1e-5)


@pytest.mark.parametrize(
  "bad, message",
  [
    (dict(temperature=-1.0), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_k=-2), "top_k"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(stop_token_ids=(1,), suppressed_token_ids=(1,)), "both"),
  ],
)
def test_bad_configs_raise(bad, message):
  with pytest.raises(ValueError, match=message):
    SamplingConfig(**bad)
