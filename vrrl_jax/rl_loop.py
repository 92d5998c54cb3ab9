"""The VRRL RL phase (VRRL_SPEC sections 3-4), one step per loop iteration, in the spec's order:

  1. draw B prompts and one rollout mode per prompt (normal / random_start / prefix_buffer); buffer entries
  2. multi-turn rollout of n samples per prompt (the batched sampler; the task's environment answers on the host)
  3. the task's rewards; online filtering of groups without signal, refilled up to a try limit (never fatal)
  4. collect new buffer entries; advance the buffer's step
  5. old-policy and reference log-probs (jitted, chunked over the sequence)
  6. GRPO advantages
  7. loss mask (assistant tokens, RandomTurnMasking, buffer prefix) and the PPO update
  8. metrics, checkpoint

Host randomness of step g comes from ``numpy.default_rng([seed, 2, g])`` and device randomness from
``fold_in(key(seed), g)``; the data position and the replay buffer are checkpointed, so a resumed run repeats
exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from vrrl_jax import experiment, run_config
from vrrl_jax.data import batching
from vrrl_jax.rl import advantages as advantages_lib
from vrrl_jax.rl import filtering as filtering_lib
from vrrl_jax.rl import modes as modes_lib
from vrrl_jax.rl import prefix_buffer as buffer_lib
from vrrl_jax.rl import step as rl_step
from vrrl_jax.rl import train_state as ts_lib
from vrrl_jax.data import conversation
from vrrl_jax.parallel import host as host_lib
from vrrl_jax.parallel import mesh as mesh_lib
from vrrl_jax.sampling import rollout as rollout_lib

log = logging.getLogger(__name__)

RL_TAG, DATA_TAG = 2, 3


def make_buffer(task, config) -> buffer_lib.PrefixBuffer:
  return buffer_lib.PrefixBuffer(
    run_config.buffer_config(config), seed=int(config.seed) + 17, task=task, task_options=task.episode_options(config)
  )


# ----------------------------------------------------------------------------------------------------------------
# Prompts: a permutation of the training maps per epoch; the position is checkpointed.


def prompt_indices(seed: int, num_prompts: int, start: int, count: int) -> np.ndarray:
  out = []
  for position in range(start, start + count):
    epoch, offset = divmod(position, num_prompts)
    out.append(experiment.host_rng(seed, DATA_TAG, epoch).permutation(num_prompts)[offset])
  return np.asarray(out, np.int64)


@dataclasses.dataclass
class Group:
  """One question's n samples after rollout and reward."""

  mode: str
  samples: list[rollout_lib.Trajectory]
  rewards: dict[str, np.ndarray]  # metric -> [n]


def draw_groups(
  exp,
  config,
  sampler,
  params,
  examples,
  buffer,
  progress,
  rng: np.random.Generator,
  key,
  reward_config,
  timings: dict | None = None,
) -> list[Group]:
  """Steps 1-3 of one draw: prompts, modes, buffer entries, rollout, rewards. Seconds spent scoring are added to
  ``timings["reward"]`` when given."""
  num_q, n = int(config.rl.prompts_per_step), int(config.rl.samples_per_prompt)
  idx = prompt_indices(int(config.seed), len(examples), progress.prompts_consumed, num_q)
  old_epoch = progress.prompts_consumed // len(examples)
  progress.prompts_consumed += num_q
  if progress.prompts_consumed // len(examples) != old_epoch:
    buffer.start_epoch()

  modes = modes_lib.draw_modes(num_q, run_config.mode_config(config), buffer.can_sample(), rng)
  want = int(np.sum(modes == buffer_lib.MODE_PREFIX_BUFFER))
  entries = buffer.sample(want) if want else []
  modes = modes_lib.demote_unserved_buffer_questions(modes, len(entries))
  styles = {examples[int(i)].style for i in idx}  # feedback images in the style the map images were drawn in
  if len(styles) != 1:
    raise ValueError(f"training examples mix render styles {sorted(styles)}; one rollout batch needs one")
  style = styles.pop()
  rollout_config = run_config.rollout_config(config, style=style)
  specs, prefixes, openings, entry_iter = [], [], [], iter(entries)
  for q, i in enumerate(idx):
    entry = next(entry_iter) if modes[q] == buffer_lib.MODE_PREFIX_BUFFER else None
    if modes[q] == buffer_lib.MODE_RANDOM_INIT:
      entry = injected_roll_in(exp.task, examples[int(i)].spec, rollout_config, rng, progress.global_step)
    specs.append(examples[int(i)].spec if entry is None else entry.spec)
    prefixes.append(entry)
    buffered_wrong = modes[q] == buffer_lib.MODE_PREFIX_BUFFER and entry.is_wrong
    openings.append(exp.task.REVISION_OPENING if buffered_wrong else None)
  trajectories = rollout_lib.rollout(
    exp.task,
    sampler,
    exp.processor,
    params,
    specs,
    n,
    prefixes=prefixes,
    forced_openings=openings,
    config=rollout_config,
    rng=key,
  )
  t0 = time.perf_counter()
  groups = []
  for q in range(num_q):
    samples = trajectories[q * n : (q + 1) * n]
    entry = prefixes[q] if modes[q] == buffer_lib.MODE_PREFIX_BUFFER else None
    fields = {
      "is_prefix_buffer_rollout": [entry is not None] * n,
      "prefix_buffer_type": [entry.prefix_type if entry is not None else None] * n,
      "prefix_buffer_num_turns": [entry.num_route_turns if entry is not None else 0] * n,
    }
    scores = exp.task.score_batch([t.turns for t in samples], [t.spec for t in samples], reward_config, fields)
    groups.append(Group(str(modes[q]), samples, scores))
  if timings is not None:
    timings["reward"] = timings.get("reward", 0.0) + time.perf_counter() - t0
  return groups


def injected_roll_in(task, spec, rollout_config, rng: np.random.Generator, step: int) -> buffer_lib.PrefixEntry:
  """A ``random_init`` question's prefix: the task's injected first turn and the environment's answer to it, as a
  one-turn prefix the rollout replays (its turn carries no loss: ``modes.loss_mask``)."""
  options = dict(rollout_config.episode_options)
  episode = task.new_episode(spec, max_turns=rollout_config.max_turns, style=rollout_config.style, **options)
  prompt_text, image = episode.first_prompt()
  text = task.random_init_turn(spec, rng, **options)
  answer = episode.step(text)
  if answer.done:
    raise ValueError(f"the task's injected roll-in ended the episode ({answer.reason}): {text!r}")
  return buffer_lib.PrefixEntry(
    spec=task.parse_spec(spec),
    prefix_type=buffer_lib.WRONG,
    collection_step=step,
    prompt_text=prompt_text,
    assistant_texts=(text,),
    feedback_texts=(answer.feedback_text or "",),
    final_text="",
    map_image=np.asarray(image.convert("RGB")),
    feedback_images=(None if answer.feedback_image is None else np.asarray(answer.feedback_image.convert("RGB")),),
  )


def as_row(t: rollout_lib.Trajectory) -> conversation.EncodedConversation:
  return conversation.EncodedConversation(
    input_ids=t.tokens,
    assistant_mask=t.assistant_mask,
    turn_index=t.turn_index,
    pixel_values=t.pixel_values,
    image_grid_thw=t.image_grid_thw,
  )


# ----------------------------------------------------------------------------------------------------------------
# From kept groups to one update batch.


def without_truncated(mask: np.ndarray, truncated: Sequence[bool]) -> np.ndarray:
  """ViGoRL's rule: a sample that ran out of tokens (a turn's budget or the whole sequence's) carries no loss at all;
  ``truncated`` covers the first rows of ``mask`` (the rest is padding)."""
  keep = np.ones(mask.shape[0], bool)
  keep[: len(truncated)] = ~np.asarray(truncated, bool)
  return mask * keep[:, None].astype(mask.dtype)


def build_update_batch(exp, config, groups: Sequence[Group], rng: np.random.Generator, num_rows: int):
  micro = int(config.rl.micro_batches)
  samples = [s for g in groups for s in g.samples]
  rows = [as_row(s) for s in samples]
  padded = batching.pad_rows(
    rows,
    exp.token_ids.pad_token_id,
    num_rows=num_rows,
    min_length=run_config.shape_floor(config.rl, "update_min_length", batching.MIN_LENGTH),
  )
  n_real = len(samples)
  sample_modes = np.array([g.mode for g in groups for _ in g.samples] + ["normal"] * (num_rows - n_real))
  num_turns = np.array([s.num_turns for s in samples] + [0] * (num_rows - n_real), np.int64)
  prefix_turns = np.array([s.num_prefix_turns for s in samples] + [0] * (num_rows - n_real), np.int64)
  mask, start_turn = modes_lib.loss_mask(
    padded.assistant_mask, padded.turn_index, num_turns, sample_modes, prefix_turns, run_config.mode_config(config), rng
  )
  if not config.rl.get("truncated_loss", True):
    mask = without_truncated(mask, [s.truncated for s in samples])
  targets, target_mask = rl_step.next_token_targets(padded.input_ids, mask)
  # Sampler log-probs, aligned with targets like the trainer's (token t+1 predicted at t).
  sample_logp = np.zeros(padded.input_ids.shape, np.float32)
  for b, s in enumerate(samples):
    sample_logp[b, : len(s.log_probs) - 1] = s.log_probs[1:]
  rewards = np.concatenate([g.rewards["overall"] for g in groups])
  group_ids = np.concatenate(
    [np.full(len(g.samples), i) for i, g in enumerate(groups)] + [np.full(num_rows - n_real, -1)]
  ).astype(np.int32)
  rewards = np.concatenate([rewards, np.zeros(num_rows - n_real)]).astype(np.float32)
  adv = np.asarray(advantages_lib.grpo_advantages(jnp.asarray(rewards), jnp.asarray(group_ids), len(groups)))
  inputs = rl_step.prepare_micro_batches(
    exp.model_config,
    padded.input_ids,
    padded.attention_mask,
    padded.pixel_values,
    padded.image_grid_thw,
    micro,
    patch_multiple=padded.patch_bucket(
      micro, run_config.shape_floor(config.rl, "update_min_patches", batching.MIN_PATCHES)
    ),
  )
  host = dict(
    targets=rl_step.micro_batch_rows(targets, micro),
    loss_mask=rl_step.micro_batch_rows(target_mask, micro),
    advantages=rl_step.micro_batch_rows(adv, micro),
    sample_logp=rl_step.micro_batch_rows(sample_logp, micro),
    start_turn=start_turn[:n_real],
    modes=sample_modes[:n_real],
    num_tokens=int(padded.attention_mask[:n_real].sum()),
  )
  return inputs, host


# ----------------------------------------------------------------------------------------------------------------
# The loop.


def _reward_metrics(groups: Sequence[Group], success_metric: str, prefix: str = "reward") -> dict[str, float]:
  """Means of every reward metric, and per rollout mode of overall and the task's success metric."""
  out = {}
  if not groups:
    return out
  keys = groups[0].rewards.keys()
  for k in keys:
    out[f"{prefix}/{k}"] = float(np.mean(np.concatenate([g.rewards[k] for g in groups])))
  for mode in buffer_lib.ROLLOUT_MODES:
    sel = [g for g in groups if g.mode == mode]
    if sel:
      out[f"{prefix}_{mode}/overall"] = float(np.mean(np.concatenate([g.rewards["overall"] for g in sel])))
      key = success_metric
      out[f"{prefix}_{mode}/{key}"] = float(np.mean(np.concatenate([g.rewards[key] for g in sel])))
      out[f"count/{mode}_questions"] = float(len(sel))
  return out


def run_rl(exp, config, params, specs, state, buffer, progress, ckpt, writer, sampler):
  """The RL steps from ``progress`` to the end (``state`` None: a fresh train state from ``params``, with the
  reference copy); returns the final train state."""
  seed = int(config.seed)
  sft_steps, rl_steps = int(config.sft.steps), int(config.rl.steps)
  total = sft_steps + rl_steps
  scfg = run_config.step_config(config)
  keep_reference = scfg.loss.kl_coef > 0
  if state is None:
    state = ts_lib.create_train_state(
      params,
      specs,
      scfg.optimizer,
      jax.random.PRNGKey(seed),
      exp.mesh,
      exp.rules,
      keep_reference=keep_reference,
      reference_memory=run_config.reference_memory(config),
    )
  del params
  shardings = jax.tree.map(lambda x: x.sharding, state)
  # Every process holds the whole host batch (parallel.host): each argument becomes a global array first.
  update = host_lib.with_global_inputs(
    rl_step.make_train_step(exp.model, exp.mesh, exp.rules, scfg, shardings),
    (shardings, rl_step.rl_batch_shardings(exp.mesh, exp.rules)),
  )
  rows = mesh_lib.data_sharding(exp.mesh, exp.rules, ndim=2, batch_axis=1)
  logprob_fn = host_lib.with_global_inputs(
    rl_step.make_logprob_fn(
      exp.model, exp.mesh, exp.rules, shardings.params, scfg.logprob_chunk_size, scfg.temperature
    ),
    (shardings.params, rl_step.model_inputs_shardings(exp.mesh, exp.rules), rows),
  )
  examples = exp.task.train_examples(config)
  reward_config = run_config.reward_config(config)
  filter_config = run_config.filter_config(config)
  rows_multiple = int(config.rl.micro_batches) * max(1, sampler.batch_multiple)
  min_rows = run_config.shape_floor(config.rl, "update_min_rows", 1)

  for step in tqdm.trange(
    progress.global_step + 1,
    total + 1,
    desc="rl",
    unit="step",
    initial=progress.global_step - sft_steps,
    total=rl_steps,
  ):
    rl_step_index = step - sft_steps
    t_start = time.perf_counter()
    rng = experiment.host_rng(seed, RL_TAG, step)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
    timings = {"rollout": 0.0, "reward": 0.0}

    # Steps 1-3: draw, roll out, reward, filter (refill up to the try limit).
    drawn: list[Group] = []

    def draw():
      t0 = time.perf_counter()
      reward_before = timings["reward"]
      groups = draw_groups(
        exp,
        config,
        sampler,
        state.params,
        examples,
        buffer,
        progress,
        rng,
        jax.random.fold_in(key, len(drawn)),
        reward_config,
        timings,
      )
      drawn.extend(groups)
      timings["rollout"] += time.perf_counter() - t0 - (timings["reward"] - reward_before)
      return groups

    fill = filtering_lib.fill_groups(
      draw, lambda g: g.rewards["overall"], int(config.rl.prompts_per_step), filter_config
    )
    kept = fill.groups

    # Step 4: buffer collection from every rollout of this step; advance its step.
    collected = buffer.collect([t.buffer_episode(g.mode) for g in drawn for t in g.samples], step=rl_step_index)
    buffer.set_step(rl_step_index)

    m = {
      **_reward_metrics(drawn, exp.task.SUCCESS_METRIC),
      **{f"filter/{k}": v for k, v in fill.metrics().items()},
      **{f"buffer/{k}": float(v) for k, v in buffer.stats().items()},
      **{f"buffer_collect/{k}": float(v) for k, v in collected.items()},
    }
    m["reward_kept/overall"] = float(np.mean(np.concatenate([g.rewards["overall"] for g in kept]))) if kept else 0.0
    if kept:
      # Steps 5-7: log-probs, advantages, masks, update.
      t0 = time.perf_counter()
      num_rows = max(sum(len(g.samples) for g in kept), min_rows)
      num_rows = -(-num_rows // rows_multiple) * rows_multiple
      inputs, host = build_update_batch(exp, config, kept, rng, num_rows)
      timings["batch"] = time.perf_counter() - t0
      t0 = time.perf_counter()
      targets = host["targets"]
      old_logp = logprob_fn(state.params, inputs, targets)
      ref_logp = None
      if keep_reference:  # a host-memory reference is copied to the devices for this pass only
        ref_logp = logprob_fn(ts_lib.on_device(state.ref_params, shardings.params), inputs, targets)
      jax.block_until_ready(old_logp)
      timings["logprobs"] = time.perf_counter() - t0
      mask = host["loss_mask"]
      old_np = host_lib.to_host(old_logp)
      m["logprob/sampler_vs_trainer_abs"] = float(
        np.sum(np.abs(old_np - host["sample_logp"]) * mask) / max(mask.sum(), 1.0)
      )
      batch = rl_step.RLBatch(
        inputs=inputs,
        targets=targets,
        loss_mask=mask,
        advantages=host["advantages"],
        old_logp=old_logp,
        ref_logp=ref_logp,
      )
      t0 = time.perf_counter()
      state, update_metrics = update(state, batch)
      update_metrics = rl_step.as_host_metrics(update_metrics)
      timings["update"] = time.perf_counter() - t0
      m.update({f"loss/{k}": v for k, v in update_metrics.items()})
      m.update(modes_lib.start_turn_metrics(host["start_turn"], host["modes"]))
      m["tokens/batch"] = float(host["num_tokens"])
    else:
      m["skipped_steps/no_groups"] = 1.0
    step_time = time.perf_counter() - t_start
    m.update({f"time/{k}": v for k, v in timings.items()})
    m["time/step"] = step_time
    m["time/tokens_per_s"] = float(m.get("tokens/batch", 0.0)) / step_time
    m["sampler/compilations"] = float(sampler.compile_log.total)
    writer.write(step, m)
    progress.global_step = step
    if ckpt.should_save(step, last=step == total):
      ckpt.save(step, state, buffer.state_dict(), progress.to_json())

  ckpt.wait()
  return state
