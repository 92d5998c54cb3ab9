"""Jitted SFT update (the multi-turn warm start): masked next-token NLL, token-mean over the whole batch, with the
RL step's model, batch layout, chunked log-probs, exact micro-batch accumulation, optimizer and non-finite skip
(``vrrl_jax.rl.step``).

``SFTBatch`` is ``RLBatch`` without the policy-gradient fields: inputs (micro-batched ModelInputs), targets and
loss_mask [M, b, S], indexed by target position (``rl.step.next_token_targets``); loss_mask is 1 on the assistant
tokens to imitate.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vrrl_jax.models.inputs import ModelInputs
from vrrl_jax.parallel import mesh as mesh_lib
from vrrl_jax.rl import step as rl_step
from vrrl_jax.rl.train_state import OptimizerConfig, TrainState


@flax.struct.dataclass
class SFTBatch:
  inputs: ModelInputs
  targets: jax.Array
  loss_mask: jax.Array


def sft_update_step(
  model: nn.Module,
  optimizer_config: OptimizerConfig,
  chunk_size: int,
  state: TrainState,
  batch: SFTBatch,
  param_shardings=None,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One update on ``sum(-logp * mask) / sum(mask)`` over the whole batch. Metrics: loss (the NLL before the
  update), n_tokens, entropy (mean over loss tokens) and ``rl_step.apply_gradients``'s."""
  rl_step.check_batch_shapes(batch.inputs, targets=batch.targets, loss_mask=batch.loss_mask)
  denominator = jnp.maximum(jnp.sum(batch.loss_mask.astype(jnp.float32)), 1.0)

  def loss_fn(params, micro: SFTBatch):
    logp, entropy = rl_step.token_logprobs(model, params, micro.inputs, micro.targets, chunk_size)
    keep = micro.loss_mask > 0
    sums = {
      "nll_sum": -jnp.sum(jnp.where(keep, logp, 0.0)),
      "n_tokens": jnp.sum(keep.astype(jnp.float32)),
      "entropy_sum": jnp.sum(jnp.where(keep, entropy, 0.0)),
    }
    return sums["nll_sum"] / denominator, sums

  grads, sums = rl_step.accumulate_gradients(loss_fn, state.params, batch, param_shardings)
  n_tokens = jnp.maximum(sums["n_tokens"], 1.0)
  loss = sums["nll_sum"] / n_tokens
  state, update_metrics = rl_step.apply_gradients(state, grads, loss, optimizer_config)
  return state, {
    "loss": loss,
    "n_tokens": sums["n_tokens"],
    "entropy": sums["entropy_sum"] / n_tokens,
    **update_metrics,
  }


def sft_batch_shardings(mesh: Mesh, rules) -> SFTBatch:
  rows = mesh_lib.data_sharding(mesh, rules, ndim=2, batch_axis=1)
  return SFTBatch(inputs=rl_step.model_inputs_shardings(mesh, rules), targets=rows, loss_mask=rows)


def make_sft_step(
  model: nn.Module,
  mesh: Mesh,
  rules,
  optimizer_config: OptimizerConfig,
  state_shardings: TrainState,
  chunk_size: int = 128,
):
  """jitted ``(state, batch: SFTBatch) -> (state, metrics)`` with the state donated (as ``make_train_step``)."""
  rl_step.check_chunk_size(chunk_size)
  step = functools.partial(sft_update_step, model, optimizer_config, chunk_size, param_shardings=state_shardings.params)
  return jax.jit(
    rl_step.traced_under_rules(step, mesh, rules),
    in_shardings=(state_shardings, sft_batch_shardings(mesh, rules)),
    out_shardings=(state_shardings, NamedSharding(mesh, PartitionSpec())),
    donate_argnums=0,
  )
