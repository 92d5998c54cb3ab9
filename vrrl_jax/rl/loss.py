"""Token-level PPO clipped surrogate with dual clip and k3 KL to the reference (VRRL_SPEC section 4, step 7).

Semantics are upstream's (fc2869/VRRL ``core_algos.compute_policy_loss`` / ``compute_kl("low_var_kl")``
and ``dp_actor.update_policy``):

* ``ratio = exp(clamp(logp - old_logp, -20, 20))``; the clipped ratio is
  ``exp(clamp(logp - old_logp, log(1 - clip_low), log(1 + clip_high)))``.
* per token ``l = max(-A * ratio, -A * clipped_ratio)``, and for ``A < 0`` additionally
  ``l = min(l, -A * dual_clip_c)`` (dual-clip PPO).
* ``kl = clamp(exp(d) - d - 1, -kl_clamp, kl_clamp)`` with ``d = clamp(ref_logp - logp, -20, 20)``.
* ``loss = agg(l) + kl_coef * agg(kl)`` over tokens where ``mask == 1``.

Unlike upstream, which averages inside each micro-batch and rescales, ``loss_from_logprobs`` returns
*sums* and *denominators* (the google/tunix convention): summing the sums of any partition of a
mini-batch (micro-batches, hosts) and dividing once by the total denominator gives exactly the loss
and gradient of the whole mini-batch. Typical use in a jitted micro-batch loop::

    denominator = loss_denominator(full_minibatch_mask, config)      # known before any forward
    grads = sum(jax.grad(lambda p: scaled_loss(loss_from_logprobs(..micro..), denominator, config))(params)
                for micro in micro_batches)
    metrics = finalize(accumulate(all_micro_sums), config)

Aggregation: ``token-mean`` equals upstream's ``token`` mode exactly (upstream's per-micro-batch
mean times micro tokens / total tokens). ``seq-mean-token-mean`` is the mean over sequences of each
sequence's token mean, over sequences with at least one loss token. Upstream's ``seq`` mode takes
that mean per micro-batch, counts empty rows, then weights micro-batches by their token share, so
its value depends on how the batch is split; ours does not. ``mask`` must hold 0/1.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

TOKEN_MEAN = "token-mean"
# Mean over sequences of each sequence's token mean: upstream's loss_avg_mode="seq" (see module notes).
SEQ_MEAN_TOKEN_MEAN = "seq-mean-token-mean"
LOSS_AGG_MODES = (TOKEN_MEAN, SEQ_MEAN_TOKEN_MEAN)

SUM_KEYS = (
  "pg_loss_sum",
  "kl_sum",
  "n_tokens",
  "n_seqs",
  "clip_high_count",
  "clip_low_count",
  "dual_clip_count",
  "ppo_kl_sum",
  "neg_logp_sum",
  "ratio_sum",
)


@dataclasses.dataclass(frozen=True)
class PolicyLossConfig:
  """Released values (fc2869/VRRL ``ActorConfig`` defaults and run script: kl_coef 0.01, low_var_kl).

  ``log_ratio_clamp`` bounds both ``logp - old_logp`` before the ratio's exp and ``ref_logp - logp``
  before the KL's exp (upstream uses 20 for both). ``kl_coef = 0`` drops the KL term (and then
  ``ref_logp`` may be None).
  """

  clip_low: float = 0.2
  clip_high: float = 0.3
  dual_clip_c: float = 3.0
  kl_coef: float = 0.01
  kl_clamp: float = 10.0
  log_ratio_clamp: float = 20.0
  loss_agg_mode: str = TOKEN_MEAN

  def __post_init__(self):
    for name in ("clip_low", "clip_high", "dual_clip_c", "kl_coef", "kl_clamp", "log_ratio_clamp"):
      value = getattr(self, name)
      if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(float(value))
      ):
        raise ValueError(f"PolicyLossConfig.{name} must be a finite number, got {value!r}")
    if not 0.0 <= self.clip_low < 1.0:
      raise ValueError(
        f"PolicyLossConfig.clip_low must be in [0, 1) (ratio floor 1 - clip_low > 0), got {self.clip_low}"
      )
    if self.clip_high < 0.0:
      raise ValueError(f"PolicyLossConfig.clip_high must be >= 0, got {self.clip_high}")
    if self.dual_clip_c <= 1.0:
      raise ValueError(f"PolicyLossConfig.dual_clip_c must be > 1 (dual-clip PPO), got {self.dual_clip_c}")
    if self.kl_coef < 0.0:
      raise ValueError(f"PolicyLossConfig.kl_coef must be >= 0, got {self.kl_coef}")
    if self.kl_clamp <= 0.0:
      raise ValueError(f"PolicyLossConfig.kl_clamp must be > 0, got {self.kl_clamp}")
    if self.log_ratio_clamp <= 0.0:
      raise ValueError(f"PolicyLossConfig.log_ratio_clamp must be > 0, got {self.log_ratio_clamp}")
    if self.loss_agg_mode not in LOSS_AGG_MODES:
      raise ValueError(f"PolicyLossConfig.loss_agg_mode must be one of {LOSS_AGG_MODES}, got {self.loss_agg_mode!r}")


def k3_kl(logp: jax.Array, ref_logp: jax.Array, config: PolicyLossConfig) -> jax.Array:
  """Schulman's k3 estimator of KL(policy || reference) per token, clamped as upstream's low_var_kl."""
  log_ratio = jnp.clip(ref_logp - logp, -config.log_ratio_clamp, config.log_ratio_clamp)
  kl = jnp.exp(log_ratio) - log_ratio - 1.0
  return jnp.clip(kl, -config.kl_clamp, config.kl_clamp)


def _token_weights(mask: jax.Array, config: PolicyLossConfig) -> jax.Array:
  """Weight of each token in the loss numerator; the matching denominator is ``loss_denominator``."""
  if config.loss_agg_mode == TOKEN_MEAN:
    return mask
  tokens_per_seq = jnp.sum(mask, axis=-1, keepdims=True)
  return mask / jnp.maximum(tokens_per_seq, 1.0)


def loss_denominator(mask: jax.Array, config: PolicyLossConfig) -> jax.Array:
  """Denominator of the aggregated loss for a (mini-)batch mask [batch, seq]: masked tokens for
  token-mean, sequences with at least one masked token for seq-mean-token-mean."""
  mask = jnp.asarray(mask, jnp.float32)
  if config.loss_agg_mode == TOKEN_MEAN:
    return jnp.sum(mask)
  return jnp.sum((jnp.sum(mask, axis=-1) > 0).astype(jnp.float32))


def loss_from_logprobs(
  logp: jax.Array,
  old_logp: jax.Array,
  ref_logp: jax.Array | None,
  advantages_per_token: jax.Array,
  mask: jax.Array,
  config: PolicyLossConfig,
) -> dict[str, jax.Array]:
  """Sums and counts of the PPO loss over one batch [batch, seq]; see ``finalize`` / ``scaled_loss``.

  ``advantages_per_token`` is [batch, seq] or [batch] (one advantage per sample, broadcast).
  ``pg_loss_sum`` and ``kl_sum`` are numerators of ``config.loss_agg_mode``; every other entry is
  a token count or token sum (clip counts, ``ppo_kl_sum`` = sum of old_logp - logp, ``neg_logp_sum``
  = sum of -logp, upstream's entropy proxy).
  """
  logp = jnp.asarray(logp)
  if logp.ndim != 2:
    raise ValueError(f"logp must be [batch, seq], got shape {logp.shape}")
  shape = logp.shape
  for name, value in (("old_logp", old_logp), ("mask", mask)) + (
    (("ref_logp", ref_logp),) if ref_logp is not None else ()
  ):
    if jnp.shape(value) != shape:
      raise ValueError(f"{name} has shape {jnp.shape(value)}, expected {shape} like logp")
  advantages = jnp.asarray(advantages_per_token, jnp.float32)
  if advantages.shape == shape[:1]:
    advantages = advantages[:, None]
  elif advantages.shape != shape:
    raise ValueError(f"advantages_per_token has shape {advantages.shape}, expected {shape} or {shape[:1]}")
  if ref_logp is None and config.kl_coef != 0.0:
    raise ValueError(f"ref_logp is None but kl_coef={config.kl_coef}; pass reference log-probs or set kl_coef=0")

  mask = jnp.asarray(mask, jnp.float32)
  # Masked-out positions (prompt, images, padding) may hold anything, even -inf; zero them so they
  # cannot turn the masked sums or their gradients into nan.
  keep = mask > 0
  logp = jnp.where(keep, logp.astype(jnp.float32), 0.0)
  old_logp = jnp.where(keep, jnp.asarray(old_logp, jnp.float32), 0.0)
  advantages = jnp.where(keep, advantages, 0.0)

  log_ratio = jnp.clip(logp - old_logp, -config.log_ratio_clamp, config.log_ratio_clamp)
  ratio = jnp.exp(log_ratio)
  clipped_ratio = jnp.exp(jnp.clip(log_ratio, math.log(1.0 - config.clip_low), math.log(1.0 + config.clip_high)))
  loss_unclipped = -advantages * ratio
  loss_clipped = -advantages * clipped_ratio
  loss_dual = -advantages * config.dual_clip_c
  loss_ppo = jnp.maximum(loss_unclipped, loss_clipped)
  negative = advantages < 0
  per_token = jnp.where(negative, jnp.minimum(loss_ppo, loss_dual), loss_ppo)

  # Where the clipped branch wins: ratio above 1 + clip_high with A > 0, below 1 - clip_low with A < 0.
  clipped = loss_unclipped < loss_clipped
  clip_high = clipped & (advantages > 0)
  clip_low = clipped & negative
  dual = negative & (loss_ppo > loss_dual)

  weights = _token_weights(mask, config)
  if ref_logp is None:
    kl_sum = jnp.zeros((), jnp.float32)
  else:
    ref_logp = jnp.where(keep, jnp.asarray(ref_logp, jnp.float32), 0.0)
    kl_sum = jnp.sum(k3_kl(logp, ref_logp, config) * weights)
  return {
    "pg_loss_sum": jnp.sum(per_token * weights),
    "kl_sum": kl_sum,
    "n_tokens": jnp.sum(mask),
    "n_seqs": jnp.sum((jnp.sum(mask, axis=-1) > 0).astype(jnp.float32)),
    "clip_high_count": jnp.sum(clip_high * mask),
    "clip_low_count": jnp.sum(clip_low * mask),
    "dual_clip_count": jnp.sum(dual * mask),
    "ppo_kl_sum": jax.lax.stop_gradient(jnp.sum(-log_ratio * mask)),
    "neg_logp_sum": jax.lax.stop_gradient(jnp.sum(-logp * mask)),
    "ratio_sum": jax.lax.stop_gradient(jnp.sum(ratio * mask)),
  }


def accumulate(sums: Sequence[Mapping[str, jax.Array]]) -> dict[str, jax.Array]:
  """Adds the sums of several micro-batches (or hosts); same keys required."""
  if not sums:
    raise ValueError("accumulate needs at least one dict of sums")
  keys = set(sums[0])
  for i, item in enumerate(sums[1:], start=1):
    if set(item) != keys:
      raise ValueError(f"sums[{i}] has keys {sorted(item)}, expected {sorted(keys)}")
  return jax.tree.map(lambda *leaves: sum(leaves[1:], leaves[0]), *[dict(s) for s in sums])


def _denominator_of(sums: Mapping[str, jax.Array], config: PolicyLossConfig) -> jax.Array:
  return sums["n_tokens"] if config.loss_agg_mode == TOKEN_MEAN else sums["n_seqs"]


def scaled_loss(sums: Mapping[str, jax.Array], denominator: jax.Array, config: PolicyLossConfig) -> jax.Array:
  """``(pg_loss_sum + kl_coef * kl_sum) / denominator``: differentiate this per micro-batch with the
  whole mini-batch's denominator and add the gradients. A zero denominator (nothing masked in)
  counts as 1, so an empty batch gives loss 0, not nan."""
  return (sums["pg_loss_sum"] + config.kl_coef * sums["kl_sum"]) / jnp.maximum(denominator, 1.0)


def finalize(sums: Mapping[str, jax.Array], config: PolicyLossConfig) -> dict[str, jax.Array]:
  """Loss and metrics of a batch whose sums are complete (after ``accumulate``)."""
  denominator = jnp.maximum(_denominator_of(sums, config), 1.0)
  n_tokens = jnp.maximum(sums["n_tokens"], 1.0)
  pg_loss = sums["pg_loss_sum"] / denominator
  kl_loss = sums["kl_sum"] / denominator
  return {
    "loss": pg_loss + config.kl_coef * kl_loss,
    "pg_loss": pg_loss,
    "kl_loss": kl_loss,
    "clipfrac_high": sums["clip_high_count"] / n_tokens,
    "clipfrac_low": sums["clip_low_count"] / n_tokens,
    # Upstream's names: pg_clipfrac_higher = either ratio clip active, pg_clipfrac_lower = dual clip.
    "pg_clipfrac_higher": (sums["clip_high_count"] + sums["clip_low_count"]) / n_tokens,
    "pg_clipfrac_lower": sums["dual_clip_count"] / n_tokens,
    "ppo_kl": sums["ppo_kl_sum"] / n_tokens,
    "entropy_loss": sums["neg_logp_sum"] / n_tokens,
    "ratio_mean": sums["ratio_sum"] / n_tokens,
    "n_tokens": sums["n_tokens"],
    "n_seqs": sums["n_seqs"],
  }
