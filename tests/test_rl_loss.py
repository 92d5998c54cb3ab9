"""PPO dual-clip loss + k3 KL against a plain numpy transcription of VRRL_SPEC section 4 step 7.

The reference is written per case (A >= 0: -A min(r, 1+h); A < 0: -A min(max(r, 1-l), c)) rather
than as the max/min cascade the implementation uses, and its gradient is derived by hand.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vrrl_jax.rl import loss as rl_loss

MODES = (rl_loss.TOKEN_MEAN, rl_loss.SEQ_MEAN_TOKEN_MEAN)


def reference(logp, old, ref, adv, mask, cfg):
  """Loss, metrics and d loss / d logp in float64 numpy, straight from the spec's formulas."""
  logp, old, ref, adv, mask = (np.asarray(a, np.float64) for a in (logp, old, ref, adv, mask))
  adv = adv[:, None] if adv.ndim == 1 else adv
  lo, hi, c = 1.0 - cfg.clip_low, 1.0 + cfg.clip_high, cfg.dual_clip_c
  log_ratio_raw = logp - old
  log_ratio = np.clip(log_ratio_raw, -cfg.log_ratio_clamp, cfg.log_ratio_clamp)
  r = np.exp(log_ratio)
  pos = adv >= 0
  per_token = np.where(pos, -adv * np.minimum(r, hi), -adv * np.minimum(np.maximum(r, lo), c))
  ratio_live = np.abs(log_ratio_raw) < cfg.log_ratio_clamp
  pg_grad = np.where(pos, np.where(r < hi, -adv * r, 0.0), np.where((r > lo) & (r < c), -adv * r, 0.0))
  pg_grad = np.where(ratio_live, pg_grad, 0.0)

  d_raw = ref - logp
  d = np.clip(d_raw, -cfg.log_ratio_clamp, cfg.log_ratio_clamp)
  k3_raw = np.exp(d) - d - 1.0
  kl = np.clip(k3_raw, -cfg.kl_clamp, cfg.kl_clamp)
  kl_live = (np.abs(d_raw) < cfg.log_ratio_clamp) & (np.abs(k3_raw) < cfg.kl_clamp)
  kl_grad = np.where(kl_live, 1.0 - np.exp(d), 0.0)

  n_tokens = mask.sum()
  row_tokens = mask.sum(axis=1)
  n_seqs = (row_tokens > 0).sum()
  if cfg.loss_agg_mode == rl_loss.TOKEN_MEAN:
    weights = mask / max(n_tokens, 1.0)
  else:
    weights = mask / np.maximum(row_tokens, 1.0)[:, None] / max(n_seqs, 1.0)
  pg_loss = (per_token * weights).sum()
  kl_loss = (kl * weights).sum()
  neg = adv < 0
  per_tok = lambda x: (x * mask).sum() / max(n_tokens, 1.0)  # noqa: E731
  return {
    "loss": pg_loss + cfg.kl_coef * kl_loss,
    "pg_loss": pg_loss,
    "kl_loss": kl_loss,
    "clipfrac_high": per_tok((adv > 0) & (r > hi)),
    "clipfrac_low": per_tok(neg & (r < lo)),
    "pg_clipfrac_lower": per_tok(neg & (np.maximum(r, lo) > c)),
    "ppo_kl": per_tok(-log_ratio),
    "entropy_loss": per_tok(-logp),
    "ratio_mean": per_tok(r),
    "n_tokens": n_tokens,
    "n_seqs": n_seqs,
  }, (pg_grad + cfg.kl_coef * kl_grad) * weights


def random_batch(rng, batch=6, seq=40, spread=0.6):
  """Log-probs whose ratios straddle every clip boundary, with ragged masks and per-sample advantages."""
  logp = -rng.uniform(0.01, 6.0, size=(batch, seq))
  old = logp - rng.normal(scale=spread, size=(batch, seq))
  ref = logp + rng.normal(scale=spread, size=(batch, seq))
  adv = rng.normal(scale=1.5, size=batch)
  lengths = rng.integers(1, seq + 1, size=batch)
  mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.float32)
  mask[:, :3] = 0  # a "prompt" that carries no loss
  mask[0, 5:9] = 0  # a masked-out environment turn inside the response
  return [a.astype(np.float32) for a in (logp, old, ref)] + [adv.astype(np.float32), mask]


def with_extremes(logp, old, ref, adv, mask):
  """Pins tokens into the clamp regions: log-ratio beyond +-20, KL beyond 10, dual clip."""
  old, ref, adv = old.copy(), ref.copy(), adv.copy()
  old[1, 4], old[1, 6] = logp[1, 4] - 25.0, logp[1, 6] + 25.0  # log ratio +25 / -25 -> clamped at +-20
  ref[2, 4], ref[2, 6] = logp[2, 4] + 4.0, logp[2, 6] - 30.0  # k3 = 49.6 and 19 (d clamped) -> clamped at 10
  adv[3] = -2.0  # negative advantage with large ratios -> dual clip
  old[3, 4:10] = logp[3, 4:10] - np.log(np.array([1.5, 2.9, 3.1, 5.0, 40.0, 0.5], np.float32))
  return logp, old, ref, adv, mask


@functools.partial(jax.jit, static_argnames="cfg")
def jax_loss(logp, old, ref, adv, mask, cfg):
  return rl_loss.finalize(rl_loss.loss_from_logprobs(logp, old, ref, adv, mask, cfg), cfg)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(3))
def test_loss_and_metrics_match_numpy_reference(mode, seed):
  cfg = rl_loss.PolicyLossConfig(loss_agg_mode=mode)
  inputs = with_extremes(*random_batch(np.random.default_rng(seed)))
  expected, _ = reference(*inputs, cfg)
  got = jax_loss(*inputs, cfg=cfg)
  for key, value in expected.items():
    np.testing.assert_allclose(float(got[key]), value, rtol=2e-5, atol=1e-6, err_msg=key)
  # Upstream's pg_clipfrac_higher is either ratio clip.
  np.testing.assert_allclose(
    float(got["pg_clipfrac_higher"]), expected["clipfrac_high"] + expected["clipfrac_low"], rtol=1e-5
  )


def test_extreme_cases_are_exercised():
  cfg = rl_loss.PolicyLossConfig()
  inputs = with_extremes(*random_batch(np.random.default_rng(0)))
  expected, _ = reference(*inputs, cfg)
  assert expected["clipfrac_high"] > 0 and expected["clipfrac_low"] > 0 and expected["pg_clipfrac_lower"] > 0
  sums = jax.jit(rl_loss.loss_from_logprobs, static_argnames="config")(*inputs, config=cfg)
  # dual clip on row 3: ratios 3.1, 5.0, 40.0 exceed c = 3 with A = -2 (1.5 and 2.9 do not, 0.5 is low-clipped)
  assert float(sums["dual_clip_count"]) >= 3
  # The two clamped KL tokens each contribute exactly kl_clamp.
  kl = rl_loss.k3_kl(jnp.asarray(inputs[0][2, [4, 6]]), jnp.asarray(inputs[2][2, [4, 6]]), cfg)
  np.testing.assert_allclose(np.asarray(kl), [10.0, 10.0])


@pytest.mark.parametrize("mode", MODES)
def test_gradient_wrt_logp_matches_hand_derived_gradient(mode):
  cfg = rl_loss.PolicyLossConfig(loss_agg_mode=mode)
  logp, old, ref, adv, mask = with_extremes(*random_batch(np.random.default_rng(7)))
  _, expected_grad = reference(logp, old, ref, adv, mask, cfg)
  grad = jax.grad(lambda lp: jax_loss(lp, old, ref, adv, mask, cfg)["loss"])(jnp.asarray(logp))
  np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("mode", MODES)
def test_gradient_on_policy_ratio_exactly_one(mode):
  # First update after a rollout: logp == old_logp bit for bit, so the clipped and unclipped branches tie.
  cfg = rl_loss.PolicyLossConfig(loss_agg_mode=mode)
  logp, _, ref, adv, mask = random_batch(np.random.default_rng(9))
  _, expected_grad = reference(logp, logp, ref, adv, mask, cfg)
  grad = jax.grad(lambda lp: jax_loss(lp, logp, ref, adv, mask, cfg)["loss"])(jnp.asarray(logp))
  np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=1e-4, atol=1e-7)


def toy_policy_inputs(rng, batch=8, seq=12, dim=5, vocab=7):
  x = rng.normal(size=(batch, seq, dim)).astype(np.float32)
  w = rng.normal(scale=0.5, size=(dim, vocab)).astype(np.float32)
  tokens = rng.integers(0, vocab, size=(batch, seq))
  old = rng.normal(scale=0.3, size=(batch, seq)).astype(np.float32)
  ref = rng.normal(scale=0.3, size=(batch, seq)).astype(np.float32)
  adv = rng.normal(size=batch).astype(np.float32)
  lengths = rng.integers(0, seq + 1, size=batch)
  lengths[2] = 0  # a sample with no loss token at all
  mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.float32)
  return x, w, tokens, old, ref, adv, mask


def toy_logp(w, x, tokens):
  logits = x @ w
  logp_all = jax.nn.log_softmax(logits, axis=-1)
  return jnp.take_along_axis(logp_all, tokens[..., None], axis=-1)[..., 0]


@pytest.mark.parametrize("mode", MODES)
def test_four_micro_batches_equal_one_batch_in_loss_and_gradient(mode):
  cfg = rl_loss.PolicyLossConfig(loss_agg_mode=mode)
  x, w, tokens, old_delta, ref_delta, adv, mask = toy_policy_inputs(np.random.default_rng(11))
  logp0 = np.asarray(toy_logp(w, x, tokens))
  old, ref = logp0 + old_delta, logp0 + ref_delta  # ratios near 1, some clipped
  x, tokens, old, ref, adv, mask = (jnp.asarray(a) for a in (x, tokens, old, ref, adv, mask))

  def sums_of(w_, rows):
    return rl_loss.loss_from_logprobs(
      toy_logp(w_, x[rows], tokens[rows]), old[rows], ref[rows], adv[rows], mask[rows], cfg
    )

  everything = np.arange(8)
  micro_rows = np.split(np.random.default_rng(0).permutation(8), 4)

  @jax.jit
  def full_and_micro(w_):
    full_loss, full_grad = jax.value_and_grad(lambda v: rl_loss.finalize(sums_of(v, everything), cfg)["loss"])(w_)
    denominator = rl_loss.loss_denominator(mask, cfg)  # whole mini-batch, known before any forward pass
    micro_grads = [
      jax.grad(lambda v, r=rows: rl_loss.scaled_loss(sums_of(v, r), denominator, cfg))(w_) for rows in micro_rows
    ]
    micro_sums = [sums_of(w_, rows) for rows in micro_rows]
    micro_loss = sum(rl_loss.scaled_loss(s, denominator, cfg) for s in micro_sums)
    return (
      full_loss,
      full_grad,
      rl_loss.finalize(sums_of(w_, everything), cfg),
      micro_loss,
      sum(micro_grads),
      rl_loss.finalize(rl_loss.accumulate(micro_sums), cfg),
    )

  full_loss, full_grad, full_metrics, micro_loss, micro_grad, accumulated = full_and_micro(w)
  np.testing.assert_allclose(float(micro_loss), float(full_loss), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(micro_grad), np.asarray(full_grad), rtol=1e-4, atol=1e-7)
  assert np.abs(np.asarray(full_grad)).max() > 1e-4  # the comparison is not trivially 0 == 0
  for key, value in full_metrics.items():
    np.testing.assert_allclose(float(accumulated[key]), float(value), rtol=1e-5, atol=1e-7, err_msg=key)


@pytest.mark.parametrize("mode", MODES)
def test_all_zero_mask_gives_zero_loss_and_finite_gradient(mode):
  cfg = rl_loss.PolicyLossConfig(loss_agg_mode=mode)
  logp, old, ref, adv, mask = random_batch(np.random.default_rng(2))
  mask = np.zeros_like(mask)
  logp[0, 0], old[1, 1], ref[2, 2] = -np.inf, np.nan, np.inf  # garbage at masked positions
  value, grad = jax.value_and_grad(lambda lp: jax_loss(lp, old, ref, adv, mask, cfg)["loss"])(jnp.asarray(logp))
  metrics = jax_loss(logp, old, ref, adv, mask, cfg)
  assert float(value) == 0.0
  assert np.all(np.asarray(grad) == 0.0)
  assert all(np.isfinite(float(v)) for v in metrics.values())


def test_masked_garbage_does_not_change_loss():
  cfg = rl_loss.PolicyLossConfig()
  logp, old, ref, adv, mask = random_batch(np.random.default_rng(4))
  clean = jax_loss(logp, old, ref, adv, mask, cfg)["loss"]
  dirty_logp = np.where(mask > 0, logp, -np.inf).astype(np.float32)
  dirty = jax_loss(dirty_logp, old, ref, adv, mask, cfg)["loss"]
  assert float(clean) == float(dirty)


def test_per_token_advantages_equal_broadcast_per_sample():
  cfg = rl_loss.PolicyLossConfig()
  logp, old, ref, adv, mask = random_batch(np.random.default_rng(5))
  per_sample = jax_loss(logp, old, ref, adv, mask, cfg)
  per_token = jax_loss(logp, old, ref, adv[:, None] * mask, mask, cfg)
  for key in per_sample:
    np.testing.assert_allclose(float(per_token[key]), float(per_sample[key]), rtol=1e-6, err_msg=key)


def test_kl_coef_zero_allows_no_reference():
  cfg = rl_loss.PolicyLossConfig(kl_coef=0.0)
  logp, old, ref, adv, mask = random_batch(np.random.default_rng(6))
  without = jax_loss(logp, old, None, adv, mask, cfg)
  expected, _ = reference(logp, old, ref, adv, mask, cfg)
  np.testing.assert_allclose(float(without["loss"]), expected["pg_loss"], rtol=2e-5)
  with pytest.raises(ValueError, match="ref_logp is None"):
    rl_loss.loss_from_logprobs(logp, old, None, adv, mask, rl_loss.PolicyLossConfig())


def test_released_defaults():
  cfg = rl_loss.PolicyLossConfig()
  assert (cfg.clip_low, cfg.clip_high, cfg.dual_clip_c) == (0.2, 0.3, 3.0)
  assert (cfg.kl_coef, cfg.kl_clamp, cfg.log_ratio_clamp, cfg.loss_agg_mode) == (0.01, 10.0, 20.0, "token-mean")


@pytest.mark.parametrize(
  "field, value",
  [
    ("clip_low", 1.0),
    ("clip_low", -0.1),
    ("clip_high", -0.1),
    ("dual_clip_c", 1.0),
    ("kl_coef", -1.0),
    ("kl_clamp", 0.0),
    ("log_ratio_clamp", 0.0),
    ("loss_agg_mode", "seq-mean-token-sum"),
    ("loss_agg_mode", "token"),
    ("clip_high", float("nan")),
    ("kl_coef", True),
  ],
)
def test_config_validation(field, value):
  with pytest.raises(ValueError, match=field):
    dataclasses.replace(rl_loss.PolicyLossConfig(), **{field: value})


def test_shape_errors():
  cfg = rl_loss.PolicyLossConfig()
  logp, old, ref, adv, mask = random_batch(np.random.default_rng(8))
  with pytest.raises(ValueError, match="old_logp"):
    rl_loss.loss_from_logprobs(logp, old[:, :-1], ref, adv, mask, cfg)
  with pytest.raises(ValueError, match="advantages_per_token"):
    rl_loss.loss_from_logprobs(logp, old, ref, adv[:-1], mask, cfg)
  with pytest.raises(ValueError, match="keys"):
    rl_loss.accumulate([{"a": 1.0}, {"b": 2.0}])
