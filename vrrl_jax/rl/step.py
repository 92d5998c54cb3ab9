"""Jitted device steps of RL (VRRL_SPEC section 4, steps 5 and 7): per-token log-probs of the next token (old
policy and reference, no grad) and the policy update; plus the micro-batch machinery SFT shares.

Batch layout. Every device-side batch carries a leading, static micro-batch axis M: the host packs each
micro-batch's images separately (the vision tower runs on one packed sequence of patches per forward), so the
split into micro-batches happens on the host, in ``prepare_micro_batches``. With b rows per micro-batch and S
tokens per row, an ``RLBatch`` holds:

  inputs      ModelInputs: input_ids / segment_ids [M, b, S], positions [M, 3, b, S], vision VisionInputs with
              [M, N, ...] (N patches, the same bucket for every micro-batch) or None.
  targets     [M, b, S] int32: the next token, targets[..., t] = input_ids[..., t + 1] (``next_token_targets``).
  loss_mask   [M, b, S] 0/1: loss on the prediction of targets[..., t] (assistant tokens the policy generated,
              after RandomTurnMasking); the last position and padding are 0.
  advantages  [M, b] (one per sample, GRPO) or [M, b, S] (per token).
  old_logp    [M, b, S]: log-probs of ``targets`` under the rollout policy (``make_logprob_fn``).
  ref_logp    [M, b, S] under the reference policy, or None when kl_coef == 0.

Everything is indexed by target position, so log-probs, masks and advantages line up without further shifts.

Log-probs never materialise [batch, seq, vocab] logits: the model returns final hidden states and the LM head
plus log-softmax run over chunks of ``logprob_chunk_size`` positions, each chunk rematerialised in the backward
pass, so at most one chunk's logits [b, chunk, vocab] is alive at a time.

Gradient accumulation is exact: each micro-batch's loss is its sums divided by the denominator of the whole batch
(masked tokens for token-mean, non-empty sequences for seq-mean-token-mean, computed before the loop), so the
summed gradients are the gradient of the one-batch loss. A non-finite loss or gradient norm skips the update
(params and optimizer state kept; see ``TrainState`` for the counters), as upstream skips a non-finite grad norm.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vrrl_jax.models import families
from vrrl_jax.models.inputs import ModelInputs
from vrrl_jax.models.vision import round_up
from vrrl_jax.parallel import mesh as mesh_lib
from vrrl_jax.rl import loss as loss_lib
from vrrl_jax.rl.train_state import OptimizerConfig, TrainState, learning_rate_schedule, make_optimizer


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """``temperature`` divides the logits before the log-softmax, as upstream does with the rollout temperature
  (released 1.0), so log-probs are those of the distribution that was sampled."""

  loss: loss_lib.PolicyLossConfig = loss_lib.PolicyLossConfig()
  optimizer: OptimizerConfig = OptimizerConfig()
  logprob_chunk_size: int = 128
  temperature: float = 1.0

  def __post_init__(self):
    check_chunk_size(self.logprob_chunk_size)
    _check_temperature(self.temperature)


def check_chunk_size(chunk_size) -> None:
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
    raise ValueError(f"logprob chunk size must be a positive integer, got {chunk_size!r}")


def _check_temperature(temperature) -> None:
  if (
    isinstance(temperature, bool)
    or not isinstance(temperature, (int, float))
    or not math.isfinite(temperature)
    or temperature <= 0
  ):
    raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


@flax.struct.dataclass
class RLBatch:
  """One policy-update batch; shapes in the module docstring."""

  inputs: ModelInputs
  targets: jax.Array
  loss_mask: jax.Array
  advantages: jax.Array
  old_logp: jax.Array
  ref_logp: jax.Array | None = None


# ----------------------------------------------------------------------------------------------------------------
# Host side: numpy arrays of the whole batch -> micro-batched, static-shape device inputs.


def next_token_targets(input_ids: np.ndarray, token_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Shifts token-indexed arrays [B, S] to target-indexed ones: targets[:, t] = input_ids[:, t + 1] and
  target_mask[:, t] = token_mask[:, t + 1] (the loss on token t + 1 is the log-prob predicted at t). The last
  position has no next token: target 0, mask 0."""
  input_ids, token_mask = np.asarray(input_ids), np.asarray(token_mask)
  if input_ids.ndim != 2 or token_mask.shape != input_ids.shape:
    raise ValueError(f"input_ids {input_ids.shape} and token_mask {token_mask.shape} must both be [batch, seq]")
  targets = np.zeros(input_ids.shape, np.int32)
  targets[:, :-1] = input_ids[:, 1:]
  target_mask = np.zeros(token_mask.shape, np.float32)
  target_mask[:, :-1] = token_mask[:, 1:]
  return targets, target_mask


def micro_batch_rows(array, num_micro_batches: int) -> np.ndarray:
  """[B, ...] -> [M, B / M, ...]: consecutive rows form a micro-batch (as ``prepare_micro_batches``)."""
  array = np.asarray(array)
  _check_divisible(array.shape[0], num_micro_batches)
  return array.reshape(num_micro_batches, array.shape[0] // num_micro_batches, *array.shape[1:])


def _check_divisible(batch: int, num_micro_batches: int) -> None:
  if (
    isinstance(num_micro_batches, bool) or not isinstance(num_micro_batches, (int, np.integer)) or num_micro_batches < 1
  ):
    raise ValueError(f"num_micro_batches must be a positive integer, got {num_micro_batches!r}")
  if batch % num_micro_batches:
    raise ValueError(f"batch of {batch} rows cannot be split into {num_micro_batches} equal micro-batches")


def _images_per_row(config, input_ids: np.ndarray, image_grid_thw: np.ndarray) -> list[range]:
  """Which images (rows of image_grid_thw, in row-major order as the processor lists them) each row holds."""
  tokens_per_image = np.prod(image_grid_thw, axis=1) // config.vision.merge_unit
  image_tokens = (input_ids == config.image_token_id).sum(axis=1)
  rows, start = [], 0
  for row, count in enumerate(image_tokens.tolist()):
    stop, taken = start, 0
    while taken < count and stop < len(tokens_per_image):
      taken += int(tokens_per_image[stop])
      stop += 1
    if taken != count:
      raise ValueError(
        f"row {row} holds {count} image tokens, which image_grid_thw rows {start}.. do not add up "
        f"to (images are assigned to rows in order, {config.vision.merge_unit} patches per token)"
      )
    rows.append(range(start, stop))
    start = stop
  if start != len(tokens_per_image):
    raise ValueError(
      f"image_grid_thw lists {len(tokens_per_image)} images but the rows' image tokens account for {start}"
    )
  return rows


def prepare_micro_batches(
  config,
  input_ids,
  attention_mask,
  pixel_values=None,
  image_grid_thw=None,
  num_micro_batches: int = 1,
  patch_multiple: int = 256,
) -> ModelInputs:
  """Processor-style arrays of the whole batch (pixel_values of every image concatenated in row order, one
  image_grid_thw row per image) -> ModelInputs with a leading micro-batch axis.

  Each micro-batch's images are packed on their own and padded to one patch count for all micro-batches (the
  largest, rounded up to ``patch_multiple``), so the micro-batches stack into static shapes.
  """
  input_ids, attention_mask = np.asarray(input_ids), np.asarray(attention_mask)
  if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
    raise ValueError(f"input_ids {input_ids.shape} and attention_mask {attention_mask.shape} must both be [batch, seq]")
  batch = input_ids.shape[0]
  _check_divisible(batch, num_micro_batches)
  rows_per_micro = batch // num_micro_batches
  micro_rows = [slice(m * rows_per_micro, (m + 1) * rows_per_micro) for m in range(num_micro_batches)]
  if image_grid_thw is None:
    if pixel_values is not None:
      raise ValueError("pixel_values and image_grid_thw must be given together")
    micro_inputs = [families.prepare_inputs(config, input_ids[rows], attention_mask[rows])[0] for rows in micro_rows]
    return jax.tree.map(lambda *xs: np.stack(xs), *micro_inputs)

  grids = np.asarray(image_grid_thw, np.int64).reshape(-1, 3)
  pixel_values = np.asarray(pixel_values)
  patches_per_image = np.prod(grids, axis=1)
  if pixel_values.ndim != 2 or pixel_values.shape[0] != patches_per_image.sum():
    raise ValueError(
      f"pixel_values shape {pixel_values.shape} does not hold the {int(patches_per_image.sum())} "
      "patches image_grid_thw describes"
    )
  pixel_offsets = np.concatenate([[0], np.cumsum(patches_per_image)])
  images_of_row = _images_per_row(config, input_ids, grids)
  micro_images = [range(images_of_row[rows.start].start, images_of_row[rows.stop - 1].stop) for rows in micro_rows]
  with_images = [len(images) > 0 for images in micro_images]
  if any(with_images) and not all(with_images):
    raise ValueError(
      f"micro-batches {[m for m, has in enumerate(with_images) if not has]} hold no image while "
      "others do; static shapes need images in every micro-batch or in none"
    )
  if not any(with_images):
    raise ValueError("image_grid_thw was given but no row holds image tokens")
  real_patches = max(int(patches_per_image[images].sum()) for images in micro_images)
  # prepare_inputs pads to a multiple of its patch_multiple: one multiple >= every micro-batch pads all alike.
  padded_patches = round_up(real_patches, patch_multiple)
  micro_inputs = []
  for rows, images in zip(micro_rows, micro_images):
    pixels = pixel_values[pixel_offsets[images.start] : pixel_offsets[images.stop]]
    inputs, _ = families.prepare_inputs(
      config,
      input_ids[rows],
      attention_mask[rows],
      pixels,
      grids[images.start : images.stop],
      patch_multiple=padded_patches,
    )
    micro_inputs.append(inputs)
  return jax.tree.map(lambda *xs: np.stack(xs), *micro_inputs)


# ----------------------------------------------------------------------------------------------------------------
# Device side.


def token_logprobs(
  model: nn.Module, params, inputs: ModelInputs, targets: jax.Array, chunk_size: int = 128, temperature: float = 1.0
) -> tuple[jax.Array, jax.Array]:
  """log p(targets[b, t] | tokens <= t) and the entropy of that next-token distribution, both [B, S] float32.

  Traceable (call it inside jit); ``inputs`` is one micro-batch ([B, S]). The LM head runs over chunks of
  ``chunk_size`` positions (the last chunk padded); each chunk is rematerialised in the backward pass. The entropy
  is a metric and carries no gradient. Positions past the real tokens hold finite values to be masked out.
  """
  check_chunk_size(chunk_size)
  _check_temperature(temperature)
  hidden = model.apply({"params": params}, inputs, return_logits=False, method="forward").logits
  batch, length, dim = hidden.shape
  if targets.shape != (batch, length):
    raise ValueError(f"targets shape {targets.shape} != input_ids shape {(batch, length)}")
  chunk = min(chunk_size, length)
  num_chunks = -(-length // chunk)
  pad = num_chunks * chunk - length
  hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(batch, num_chunks, chunk, dim).swapaxes(0, 1)
  targets = jnp.pad(targets.astype(jnp.int32), ((0, 0), (0, pad))).reshape(batch, num_chunks, chunk).swapaxes(0, 1)

  @jax.checkpoint
  def chunk_stats(params, hidden, targets):
    logits = model.apply({"params": params}, hidden, method="lm_logits")  # [B, chunk, V] float32
    if temperature != 1.0:
      logits = logits / temperature
    log_normaliser = jax.nn.logsumexp(logits, axis=-1)
    # A compare-and-sum rather than a gather, so a vocab split over the tensor axis needs no all-gather.
    is_target = jnp.arange(logits.shape[-1], dtype=jnp.int32) == targets[..., None]
    target_logit = jnp.sum(jnp.where(is_target, logits, 0.0), axis=-1)
    logits = jax.lax.stop_gradient(logits)
    probs = jnp.exp(logits - jax.lax.stop_gradient(log_normaliser)[..., None])
    entropy = jax.lax.stop_gradient(log_normaliser) - jnp.sum(probs * logits, axis=-1)
    return target_logit - log_normaliser, entropy

  logp, entropy = jax.lax.map(lambda xs: chunk_stats(params, *xs), (hidden, targets))
  unchunk = lambda x: x.swapaxes(0, 1).reshape(batch, num_chunks * chunk)[:, :length]
  return unchunk(logp), unchunk(entropy)


def micro_batch_logprobs(
  model: nn.Module, params, inputs: ModelInputs, targets: jax.Array, chunk_size: int = 128, temperature: float = 1.0
) -> jax.Array:
  """``token_logprobs`` of every micro-batch ([M, ...] inputs and targets) -> [M, b, S], one forward at a time."""
  return jax.lax.map(lambda xs: token_logprobs(model, params, *xs, chunk_size, temperature)[0], (inputs, targets))


def accumulate_gradients(loss_fn: Callable, params, micro_batches, param_shardings=None):
  """Sums of ``loss_fn(params, micro_batch) -> (loss, aux dict of scalars)``'s gradients and aux over the leading
  micro-batch axis of ``micro_batches`` (lax.scan: one micro-batch's activations alive at a time).

  Gradients accumulate in float32 and come back in the params' dtypes. ``loss_fn`` must already divide by the
  whole batch's denominator for the sum to be the one-batch gradient.
  """
  first = jax.tree.map(lambda x: x[0], micro_batches)
  aux_shapes = jax.eval_shape(loss_fn, params, first)[1]
  zero_aux = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), aux_shapes)
  zero_grads = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)

  def body(carry, micro_batch):
    grad_sum, aux_sum = carry
    grads, aux = jax.grad(loss_fn, has_aux=True)(params, micro_batch)
    grad_sum = jax.tree.map(lambda total, g: total + g.astype(jnp.float32), grad_sum, grads)
    if param_shardings is not None:
      grad_sum = jax.lax.with_sharding_constraint(grad_sum, param_shardings)
    return (grad_sum, jax.tree.map(jnp.add, aux_sum, aux)), None

  (grads, aux), _ = jax.lax.scan(body, (zero_grads, zero_aux), micro_batches)
  return jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params), aux


def apply_gradients(
  state: TrainState, grads, loss: jax.Array, optimizer_config: OptimizerConfig
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer update, or none when the loss or the (pre-clip) global gradient norm is not finite.

  ``step`` always advances; a skipped update keeps params and opt_state bit for bit and bumps
  ``skipped_updates``. Metrics: grad_norm (before clipping), lr (of this update), skipped (0/1), skipped_updates.
  """
  optimizer = make_optimizer(optimizer_config)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(grad_norm) & jnp.isfinite(loss)

  def update(params, opt_state):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  # A cond, not a select per leaf: a skipped step does no optimizer work and an applied one writes each leaf once.
  params, opt_state = jax.lax.cond(finite, update, lambda *args: args, state.params, state.opt_state)
  skipped = jnp.logical_not(finite).astype(jnp.int32)
  applied_so_far = state.step - state.skipped_updates
  new_state = state.replace(
    step=state.step + 1, params=params, opt_state=opt_state, skipped_updates=state.skipped_updates + skipped
  )
  lr = jnp.asarray(learning_rate_schedule(optimizer_config)(applied_so_far), jnp.float32)
  metrics = {"grad_norm": grad_norm, "lr": lr, "skipped": skipped, "skipped_updates": new_state.skipped_updates}
  return new_state, metrics


def check_batch_shapes(inputs: ModelInputs, **arrays) -> tuple[int, ...]:
  shape = tuple(inputs.input_ids.shape)
  if len(shape) != 3:
    raise ValueError(f"batch input_ids must be [micro_batches, rows, seq], got {shape}")
  for name, value in arrays.items():
    if value is not None and tuple(value.shape) != shape:
      raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {shape} like input_ids")
  return shape


def update_step(
  model: nn.Module, config: StepConfig, state: TrainState, batch: RLBatch, param_shardings=None
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One PPO update on one batch (traceable; ``make_train_step`` jits it). Metrics: ``loss_lib.finalize``'s
  (loss, pg_loss, kl_loss, clip fractions, ppo_kl, entropy_loss = mean -logp, n_tokens, ...), entropy (mean
  entropy of the next-token distribution over loss tokens) and ``apply_gradients``'s."""
  shape = check_batch_shapes(
    batch.inputs, targets=batch.targets, loss_mask=batch.loss_mask, old_logp=batch.old_logp, ref_logp=batch.ref_logp
  )
  if tuple(batch.advantages.shape) not in (shape[:2], shape):
    raise ValueError(
      f"advantages has shape {tuple(batch.advantages.shape)}, expected {shape[:2]} (per sample) or {shape} (per token)"
    )
  mask = batch.loss_mask.astype(jnp.float32)
  denominator = loss_lib.loss_denominator(mask.reshape(-1, shape[-1]), config.loss)

  def loss_fn(params, micro: RLBatch):
    logp, entropy = token_logprobs(
      model, params, micro.inputs, micro.targets, config.logprob_chunk_size, config.temperature
    )
    sums = loss_lib.loss_from_logprobs(
      logp, micro.old_logp, micro.ref_logp, micro.advantages, micro.loss_mask, config.loss
    )
    sums["entropy_sum"] = jnp.sum(jnp.where(micro.loss_mask > 0, entropy, 0.0))
    return loss_lib.scaled_loss(sums, denominator, config.loss), sums

  grads, sums = accumulate_gradients(loss_fn, state.params, batch, param_shardings)
  metrics = loss_lib.finalize(sums, config.loss)
  metrics["entropy"] = sums["entropy_sum"] / jnp.maximum(sums["n_tokens"], 1.0)
  state, update_metrics = apply_gradients(state, grads, metrics["loss"], config.optimizer)
  return state, {**metrics, **update_metrics}


# ----------------------------------------------------------------------------------------------------------------
# Jitted entry points with shardings.


def model_inputs_shardings(mesh: Mesh, rules) -> ModelInputs:
  """Shardings of micro-batched ModelInputs: rows over the batch axes, images replicated (a prefix tree: the
  vision entry covers the whole VisionInputs, or nothing when it is None)."""
  rows = mesh_lib.data_sharding(mesh, rules, ndim=2, batch_axis=1)
  return ModelInputs(
    input_ids=rows,
    segment_ids=rows,
    positions=mesh_lib.data_sharding(mesh, rules, ndim=3, batch_axis=2),
    vision=NamedSharding(mesh, PartitionSpec()),
  )


def rl_batch_shardings(mesh: Mesh, rules) -> RLBatch:
  """Rows over the batch axes; the spec names the first two dims only, so per-sample [M, b] and per-token
  [M, b, S] advantages share it, and a None ref_logp is accepted."""
  rows = mesh_lib.data_sharding(mesh, rules, ndim=2, batch_axis=1)
  return RLBatch(
    inputs=model_inputs_shardings(mesh, rules),
    targets=rows,
    loss_mask=rows,
    advantages=rows,
    old_logp=rows,
    ref_logp=rows,
  )


def traced_under_rules(fn: Callable, mesh: Mesh, rules) -> Callable:
  """``fn`` traced with the mesh and the logical-axis rules active, so the model's activation constraints apply
  without the caller entering any context."""

  @functools.wraps(fn)
  def wrapped(*args):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(rules):
      return fn(*args)

  return wrapped


def make_logprob_fn(
  model: nn.Module, mesh: Mesh, rules, param_shardings, chunk_size: int = 128, temperature: float = 1.0
):
  """jitted ``(params, inputs [M, ...], targets [M, b, S]) -> logp [M, b, S]`` for old-policy and reference
  log-probs (no gradient); the result stays on the mesh, sharded like the batch rows."""
  check_chunk_size(chunk_size)
  _check_temperature(temperature)
  rows = mesh_lib.data_sharding(mesh, rules, ndim=2, batch_axis=1)
  fn = functools.partial(micro_batch_logprobs, model, chunk_size=chunk_size, temperature=temperature)
  return jax.jit(
    traced_under_rules(lambda params, inputs, targets: fn(params, inputs, targets), mesh, rules),
    in_shardings=(param_shardings, model_inputs_shardings(mesh, rules), rows),
    out_shardings=rows,
  )


def make_train_step(model: nn.Module, mesh: Mesh, rules, config: StepConfig, state_shardings: TrainState):
  """jitted ``(state, batch: RLBatch) -> (state, metrics)``; the state is donated (its old buffers are reused),
  metrics are replicated float scalars. ``state_shardings``: ``train_state_shardings(...)`` or
  ``jax.tree.map(lambda x: x.sharding, state)``."""
  step = functools.partial(update_step, model, config, param_shardings=state_shardings.params)
  return jax.jit(
    traced_under_rules(step, mesh, rules),
    in_shardings=(state_shardings, rl_batch_shardings(mesh, rules)),
    out_shardings=(state_shardings, NamedSharding(mesh, PartitionSpec())),
    donate_argnums=0,
  )


def as_host_metrics(metrics: dict[str, Any]) -> dict[str, float]:
  """Device metric scalars -> Python floats (one transfer)."""
  return {name: float(value) for name, value in jax.device_get(metrics).items()}
