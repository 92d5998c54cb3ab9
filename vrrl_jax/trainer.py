"""The training run, top to bottom: setup, resume, SFT warm start, VRRL RL, evaluation (VRRL_SPEC sections 3-5).

Phases share one checkpoint directory and one global step counter (SFT steps 1..S, then RL steps S+1..S+R);
the ``host`` record of a checkpoint says which phase it belongs to, so a restart resumes the right loop with the
right train state (SFT has no reference model; RL starts from the SFT result with a frozen copy as reference
and a fresh optimizer, as upstream's RL starts from an SFT checkpoint).

Determinism on resume: device randomness is ``fold_in(key(seed), global_step)`` and host randomness is
``numpy.default_rng([seed, phase, step])``, so nothing depends on history except what the checkpoint holds
(params, optimizer, replay buffer with its own generator, the data position).
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time

import jax
import ml_collections
import numpy as np
import tqdm

from vrrl_jax import eval as eval_lib
from vrrl_jax import experiment, figures, rl_loop, run_config
from vrrl_jax import metrics as metrics_lib
from vrrl_jax.checkpoints.train_checkpoint import TrainCheckpointer
from vrrl_jax.data import batching, conversation
from vrrl_jax.parallel import host as host_lib
from vrrl_jax.rl import step as rl_step
from vrrl_jax.rl import train_state as ts_lib
from vrrl_jax.run_state import DONE, RL, SFT, SFT_DONE, Progress, resume
from vrrl_jax.sft import step as sft_step_lib

log = logging.getLogger(__name__)

_PHASE_TAG = {SFT: 1, RL: 2}
# The eval galleries link the run's figure (written when the run ends: figures.run_figure).
FIGURE_LINK = (
  ("the run at a glance: training reward per RL step, eval optimal_rate per level", f"../{figures.FIGURE_FILE}"),
)


# ----------------------------------------------------------------------------------------------------------------
# Batches.


def sft_batch(
  exp: experiment.Experiment,
  rows,
  num_rows: int,
  micro_batches: int,
  min_length: int = batching.MIN_LENGTH,
  min_patches: int = batching.MIN_PATCHES,
) -> sft_step_lib.SFTBatch:
  padded = batching.pad_rows(rows, exp.token_ids.pad_token_id, num_rows=num_rows, min_length=min_length)
  targets, target_mask = rl_step.next_token_targets(padded.input_ids, padded.assistant_mask)
  inputs = rl_step.prepare_micro_batches(
    exp.model_config,
    padded.input_ids,
    padded.attention_mask,
    padded.pixel_values,
    padded.image_grid_thw,
    micro_batches,
    patch_multiple=padded.patch_bucket(micro_batches, min_patches),
  )
  return sft_step_lib.SFTBatch(
    inputs=inputs,
    targets=rl_step.micro_batch_rows(targets, micro_batches),
    loss_mask=rl_step.micro_batch_rows(target_mask, micro_batches),
  )


def sft_rows(
  exp: experiment.Experiment,
  specs,
  rng: np.random.Generator,
  batch_size: int,
  transcript_config,
  wrong_route_loss: bool = True,
):
  """One SFT batch of the task's scripted transcripts. ``wrong_route_loss=False``: the deliberately wrong turns
  stay in the context (the revision that follows still learns to read their feedback) but carry no loss."""
  picks = rng.choice(len(specs), size=batch_size, replace=True)
  messages = [exp.task.sft_messages(specs[i], rng, transcript_config, wrong_route_loss) for i in picks]
  return [conversation.encode_conversation(exp.processor, m) for m in messages]


# ----------------------------------------------------------------------------------------------------------------
# The run.


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  run_config.validate(config)  # before anything is built or compiled: a bad value costs seconds
  workdir = pathlib.Path(workdir)
  exp = experiment.build(config)
  if jax.process_index() == 0:
    experiment.save_config(config, workdir)
  sft_steps, rl_steps = int(config.sft.steps), int(config.rl.steps)
  log.info(
    "model: %s text layers x %d, %s vision blocks; mesh %s",
    exp.model_config.text.num_hidden_layers,
    exp.model_config.text.hidden_size,
    exp.model_config.vision.depth,
    dict(exp.mesh.shape),
  )

  # --- Setup: params, checkpoints, resume ---------------------------------------------------------------------
  params, specs = experiment.initial_params(exp, int(config.seed))
  ckpt = TrainCheckpointer(
    workdir / "checkpoints", save_every=int(config.checkpoint.every), keep=int(config.checkpoint.keep)
  )
  buffer = rl_loop.make_buffer(exp.task, config)
  progress = Progress(phase=SFT if sft_steps > 0 else RL)
  resumed = resume(ckpt, exp, config, params, specs, buffer)
  if resumed is not None:
    progress, state = resumed
    log.info("resumed from step %d (phase %s)", progress.global_step, progress.phase)
  else:
    state = None
  writer = metrics_lib.MetricsWriter(
    workdir,
    resume_step=progress.global_step if resumed else None,
    console_keys=list(config.log.console_keys),
    # Resumed at the last SFT step's checkpoint: the eval before RL (logged at that step) runs again.
    redo_at_resume=("eval_before_rl/",) if resumed and progress.phase == SFT_DONE else (),
  )
  results: dict = {}

  # --- SFT warm start -----------------------------------------------------------------------------------------
  if progress.phase == SFT and progress.global_step < sft_steps:
    opt_cfg = run_config.sft_optimizer_config(config)
    if state is None:
      state = ts_lib.create_train_state(
        params, specs, opt_cfg, jax.random.PRNGKey(config.seed), exp.mesh, exp.rules, keep_reference=False
      )
    shardings = jax.tree.map(lambda x: x.sharding, state)
    update = host_lib.with_global_inputs(
      sft_step_lib.make_sft_step(exp.model, exp.mesh, exp.rules, opt_cfg, shardings),
      (shardings, sft_step_lib.sft_batch_shardings(exp.mesh, exp.rules)),
    )
    train_specs = [e.spec for e in exp.task.train_examples(config)]
    tcfg = run_config.transcript_config(config)
    min_length = run_config.shape_floor(config.sft, "min_length", batching.MIN_LENGTH)
    min_patches = run_config.shape_floor(config.sft, "min_patches", batching.MIN_PATCHES)
    for step in tqdm.trange(
      progress.global_step + 1, sft_steps + 1, desc="sft", unit="step", initial=progress.global_step, total=sft_steps
    ):
      t0 = time.perf_counter()
      rng = experiment.host_rng(int(config.seed), _PHASE_TAG[SFT], step)
      rows = sft_rows(exp, train_specs, rng, int(config.sft.batch_size), tcfg, bool(config.sft.wrong_route_loss))
      longest = max(len(row.input_ids) for row in rows)
      if longest > int(config.max_sequence_len):
        raise ValueError(
          f"SFT step {step}: a transcript has {longest} tokens, more than max_sequence_len={config.max_sequence_len}: "
          "RL could never roll out what SFT teaches; raise max_sequence_len or shorten the transcripts"
        )
      batch = sft_batch(exp, rows, int(config.sft.batch_size), int(config.sft.micro_batches), min_length, min_patches)
      state, m = update(state, batch)
      m = rl_step.as_host_metrics(m)
      m = {f"sft/{k}": v for k, v in m.items()}
      m["time/step"] = time.perf_counter() - t0
      m["sft/seq_len"] = int(batch.targets.shape[-1])
      writer.write(step, m)
      progress.global_step = step
      if ckpt.should_save(step, last=step == sft_steps):
        phase = SFT_DONE if step == sft_steps else SFT
        ckpt.save(step, state, buffer.state_dict(), dataclasses.replace(progress, phase=phase).to_json())
    progress.phase = SFT_DONE
  if progress.phase == SFT_DONE:  # RL starts from the SFT params with a fresh optimizer and reference copy
    params = state.params
    state = None
    progress.phase = RL

  # --- VRRL RL ------------------------------------------------------------------------------------------------
  if progress.phase == RL:
    sampler = experiment.make_sampler(exp, run_config.sampler_buckets(config))
    run_eval = len(exp.task.eval_examples(config)) > 0
    if state is None and progress.global_step == sft_steps and bool(config.eval.before_rl) and run_eval:
      results["before_rl"] = _evaluate(exp, config, params, workdir, "eval_before_rl", sampler, writer, progress)
    state = rl_loop.run_rl(exp, config, params, specs, state, buffer, progress, ckpt, writer, sampler)
    if run_eval:
      results["after_rl"] = _evaluate(exp, config, state.params, workdir, "eval_after_rl", sampler, writer, progress)
    progress.phase = DONE

  ckpt.close()
  writer.close()
  if jax.process_index() == 0 and (rl_steps > 0 or results):
    log.info("run figure: %s", figures.run_figure(workdir, first_rl_step=sft_steps + 1, task=exp.task))
  return results


def _evaluate(exp, config, params, workdir, name: str, sampler, writer, progress) -> dict:
  metrics = eval_lib.evaluate(exp, config, params, workdir / name, sampler=sampler, links=FIGURE_LINK)
  writer.write(progress.global_step, {f"{name}/{k}": v for k, v in eval_lib.headline(exp.task, metrics).items()})
  return metrics
