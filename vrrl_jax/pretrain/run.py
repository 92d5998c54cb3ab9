"""The perception pretraining run, top to bottom: build, resume, then steps of a seeded task mixture through the SFT
update, with held-out accuracy every ``eval_every`` steps and a gallery of held-out predictions at the end.

Training maps are generated on the fly (``numpy.default_rng([seed, 4, step])`` draws the step's tasks, levels and
maps, so a resumed run repeats an uninterrupted one) and never hit a layout of the release's evaluation maps; the
held-out set is those evaluation maps (L3-L6), rendered in the training style, every task on each.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from vrrl_jax import experiment, gallery, metrics as metrics_lib, run_config, trainer
from vrrl_jax.checkpoints.train_checkpoint import TrainCheckpointer
from vrrl_jax.data import conversation
from vrrl_jax.tasks import frozenlake
from vrrl_jax.tasks.frozenlake import generate, maps, release_data
from vrrl_jax.pretrain import export
from vrrl_jax.pretrain import tasks as tasks_lib
from vrrl_jax.rl import step as rl_step
from vrrl_jax.rl import train_state as ts_lib
from vrrl_jax.sft import step as sft_step_lib

log = logging.getLogger(__name__)

PRETRAIN_TAG = 4
EXPORT_DIR = "hf"  # under the workdir: the final model as a Hugging Face directory with its model card


@dataclasses.dataclass(frozen=True)
class HeldOutRow:
  """One held-out example with what scoring needs: its answer tokens and each unit's token indices in them."""

  spec: maps.MapSpec
  example: tasks_lib.Example
  row: conversation.EncodedConversation
  answer_ids: np.ndarray
  unit_tokens: list[np.ndarray]


def task_weights(config) -> dict[str, float]:
  weights = {k: float(v) for k, v in run_config.as_dict(config.pretrain.task_weights).items()}
  unknown = sorted(set(weights) - set(tasks_lib.TASKS))
  if unknown or not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
    raise run_config.ConfigError(
      f"config.pretrain.task_weights={weights}: weights >= 0 (not all 0) for tasks among {list(tasks_lib.TASKS)}"
    )
  return weights


def training_rows(exp, config, step: int, exclude: frozenset[str]) -> list[conversation.EncodedConversation]:
  rng = experiment.host_rng(int(config.seed), PRETRAIN_TAG, step)
  weights = task_weights(config)
  names = list(weights)
  p = np.array([weights[n] for n in names]) / sum(weights.values())
  levels = tuple(config.pretrain.levels)
  rows = []
  for _ in range(int(config.pretrain.batch_size)):
    task = names[rng.choice(len(names), p=p)]
    spec = generate.generate_map(rng, int(levels[rng.integers(len(levels))]), exclude=exclude)
    example = tasks_lib.make_example(task, spec, rng, config.pretrain.style)
    rows.append(conversation.encode_conversation(exp.processor, example.messages()))
  return rows


def held_out_rows(exp, config) -> list[HeldOutRow]:
  """Every task on the first ``eval_maps_per_level`` release evaluation maps of each level (routes seeded)."""
  by_level: dict[int, list[maps.MapSpec]] = {}
  for entry in release_data.read_maps(release_data.EVAL_FILE, config.data_dir):
    spec = maps.parse_spec(entry["metadata"], require_reachable=True)
    by_level.setdefault(spec.level, []).append(spec)
  rng = np.random.default_rng([int(config.seed), PRETRAIN_TAG, 0])
  out = []
  for level in sorted(by_level):
    for spec in by_level[level][: int(config.pretrain.eval_maps_per_level)]:
      for task in task_weights(config):
        out.append(held_out_row(exp, spec, tasks_lib.make_example(task, spec, rng, config.pretrain.style)))
  return out


def held_out_row(exp, spec: maps.MapSpec, example: tasks_lib.Example) -> HeldOutRow:
  """``example`` encoded for scoring: its answer tokens (checked against the conversation's) and its units' tokens."""
  row = conversation.encode_conversation(exp.processor, example.messages())
  enc = exp.processor.tokenizer(example.answer, return_offsets_mapping=True, add_special_tokens=False)
  answer_ids = np.asarray(enc["input_ids"], np.int64)
  if not np.array_equal(row.input_ids[row.assistant_mask > 0][:-1], answer_ids):
    raise ValueError(f"held-out {example.task} answer tokens differ from the conversation's assistant tokens")
  return HeldOutRow(spec, example, row, answer_ids, tasks_lib.unit_token_spans(enc["offset_mapping"], example.units))


def teacher_forced(exp, config, predict, params, held_out: list[HeldOutRow]):
  """Yields ``(row, right, predicted)`` per row: whether each answer token is predicted right under teacher forcing,
  and the predicted answer tokens."""
  batch = int(config.pretrain.eval_batch_size)
  for start in range(0, len(held_out), batch):
    chunk = held_out[start : start + batch]
    sb = trainer.sft_batch(
      exp, [h.row for h in chunk], batch, 1, int(config.pretrain.min_length), int(config.pretrain.min_patches)
    )
    pred = np.asarray(predict(params, sb.inputs))[0]
    targets, mask = np.asarray(sb.targets)[0], np.asarray(sb.loss_mask)[0]
    for i, h in enumerate(chunk):
      positions = np.nonzero(mask[i] > 0)[0][: len(h.answer_ids)]  # the answer, before <|im_end|>
      yield h, pred[i, positions] == targets[i, positions], pred[i, positions]


def make_predict_fn(model, mesh, rules, param_shardings):
  """jitted ``(params, inputs [1, B, S]) -> argmax next token [1, B, S]`` (teacher forcing)."""

  def predict(params, inputs):
    logits = model.apply({"params": params}, jax.tree.map(lambda x: x[0], inputs), method="forward").logits
    return jnp.argmax(logits, axis=-1)[None].astype(jnp.int32)

  return jax.jit(
    rl_step.traced_under_rules(predict, mesh, rules),
    in_shardings=(param_shardings, rl_step.model_inputs_shardings(mesh, rules)),
  )


def evaluate(exp, config, predict, params, held_out: list[HeldOutRow], gallery_path: pathlib.Path | None = None):
  """Held-out accuracy: per task and unit kind, per task exact (every answer token right), map exact per level."""
  correct_units: dict[str, list[float]] = {}
  predictions = []
  for h, right, predicted in teacher_forced(exp, config, predict, params, held_out):
    task = h.example.task
    for (kind, _, _), idx in zip(h.example.units, h.unit_tokens):
      correct_units.setdefault(f"{task}/{kind}", []).append(float(right[idx].all()))
    exact = float(right.all())
    correct_units.setdefault(f"{task}/exact", []).append(exact)
    if task == "map":
      correct_units.setdefault(f"map/exact_L{h.spec.level}", []).append(exact)
    predictions.append((h, exact, exp.processor.tokenizer.decode(predicted)))
  metrics = {f"heldout/{k}": float(np.mean(v)) for k, v in sorted(correct_units.items())}
  if gallery_path is not None and jax.process_index() == 0:
    episodes = [
      {
        "map_id": f"{h.example.task} L{h.spec.level} #{n}",
        "level": h.spec.level,
        "mode": h.example.task,
        "description": frozenlake.describe(h.spec),
        "map_image": h.example.image,
        "turns": [f"target:\n{h.example.answer}", f"predicted (teacher forced):\n{text}"],
        "feedback_images": [None, None],
        "metrics": {"exact": exact},
      }
      for n, (h, exact, text) in enumerate(predictions)
    ]
    gallery.write_gallery(
      gallery_path,
      episodes,
      max_episodes=int(config.pretrain.gallery_examples),
      title="Perception pretraining: held-out predictions",
    )
  return metrics


def _resume(ckpt: TrainCheckpointer, abstract_state):
  restored = ckpt.restore_latest(abstract_state)
  if restored is None:
    return 0, None
  step, state, _, host = restored
  return int(host["step"]), state


def run(config, workdir: str) -> dict:
  """Pretrains ``config`` under ``workdir`` (resuming from its newest checkpoint); returns the last held-out
  metrics."""
  validate(config)
  workdir = pathlib.Path(workdir)
  exp = experiment.build(config)
  if jax.process_index() == 0:
    experiment.save_config(config, workdir)
  params, specs = experiment.initial_params(exp, int(config.seed))
  opt = run_config.optimizer_config(config, float(config.pretrain.learning_rate), decay_steps(config))
  ckpt = TrainCheckpointer(
    workdir / "checkpoints", save_every=int(config.checkpoint.every), keep=int(config.checkpoint.keep)
  )
  abstract = ts_lib.abstract_train_state(
    params, specs, ts_lib.make_optimizer(opt), exp.mesh, exp.rules, keep_reference=False
  )
  start, state = _resume(ckpt, abstract)
  if state is None:
    state = ts_lib.create_train_state(
      params, specs, opt, jax.random.PRNGKey(int(config.seed)), exp.mesh, exp.rules, keep_reference=False
    )
  else:
    log.info("resumed from step %d", start)
  del params
  shardings = jax.tree.map(lambda x: x.sharding, state)
  update = sft_step_lib.make_sft_step(exp.model, exp.mesh, exp.rules, opt, shardings)
  predict = make_predict_fn(exp.model, exp.mesh, exp.rules, shardings.params)
  writer = metrics_lib.MetricsWriter(
    workdir, resume_step=start if start else None, console_keys=list(config.log.console_keys)
  )
  exclude = frozenset(generate.eval_layout_hashes(config.data_dir))
  held_out = held_out_rows(exp, config)
  steps, every = int(config.pretrain.steps), int(config.pretrain.eval_every)
  batch_size = int(config.pretrain.batch_size)
  metrics: dict = {}
  for step in tqdm.trange(start + 1, steps + 1, desc="pretrain", unit="step", initial=start, total=steps):
    t0 = time.perf_counter()
    rows = training_rows(exp, config, step, exclude)
    batch = trainer.sft_batch(
      exp,
      rows,
      batch_size,
      int(config.pretrain.micro_batches),
      int(config.pretrain.min_length),
      int(config.pretrain.min_patches),
    )
    state, m = update(state, batch)
    m = {f"pretrain/{k}": v for k, v in rl_step.as_host_metrics(m).items()}
    m["time/step"] = time.perf_counter() - t0
    if step % every == 0 or step == steps:
      last = step == steps
      metrics = evaluate(
        exp, config, predict, state.params, held_out, workdir / "heldout_gallery.html" if last else None
      )
      m.update(metrics)
    writer.write(step, m)
    if ckpt.should_save(step, last=step == steps):
      ckpt.save(step, state, {}, {"step": step})
  ckpt.close()
  writer.close()
  if not metrics:  # resumed at the last step (killed before its export): evaluate the restored state
    metrics = evaluate(exp, config, predict, state.params, held_out, workdir / "heldout_gallery.html")
  if jax.process_index() == 0:
    out = workdir / EXPORT_DIR
    shutil.rmtree(out, ignore_errors=True)  # the run's own export of an earlier (shorter) run
    export.export_hf(exp, state.params, out)
    export.write_model_card(out, config, metrics, wall_seconds=_wall_seconds(workdir))
    log.info("exported the pretrained model to %s", out)
  return metrics


def decay_steps(config) -> int:
  """``pretrain.cosine_decay``: the lr decays along a cosine to 0 at the last step (else it holds after warmup)."""
  run_config.require_bool(config, "pretrain.cosine_decay")
  return int(config.pretrain.steps) if config.pretrain.cosine_decay else 0


def _wall_seconds(workdir: pathlib.Path) -> float:
  """Seconds between the first and the last metrics record (resumes included, the gaps between them too)."""
  records = metrics_lib.read_metrics(workdir)
  return records[-1]["wall_time"] - records[0]["wall_time"] if records else 0.0


PRETRAIN_KEYS = (
  "steps",
  "batch_size",
  "micro_batches",
  "learning_rate",
  "levels",
  "style",
  "task_weights",
  "eval_every",
  "eval_maps_per_level",
  "eval_batch_size",
  "gallery_examples",
  "min_length",
  "min_patches",
  "cosine_decay",
)


def validate(config) -> None:
  """The pretraining config, checked before anything is built: the sections a training run shares with it, as
  the training run checks them, plus ``pretrain``."""
  from vrrl_jax.tasks.frozenlake import render

  run_config.require_keys(
    config,
    "",
    (
      "seed",
      "init_checkpoint",
      "tokenizer_dir",
      "data_dir",
      "model",
      "model_options",
      "image",
      "mesh",
      "optimizer",
      "pretrain",
      "checkpoint",
      "log",
    ),
  )
  run_config.require_keys(config, "pretrain", PRETRAIN_KEYS)
  run_config.require_int(config, "seed", 0)
  for name, low in (
    ("steps", 1),
    ("batch_size", 1),
    ("micro_batches", 1),
    ("eval_every", 1),
    ("eval_maps_per_level", 1),
    ("eval_batch_size", 1),
    ("gallery_examples", 0),
    ("min_length", 1),
    ("min_patches", 1),
  ):
    run_config.require_int(config, f"pretrain.{name}", low)
  if config.pretrain.batch_size % config.pretrain.micro_batches:
    raise run_config.ConfigError(
      f"config.pretrain.micro_batches={config.pretrain.micro_batches}: must divide "
      f"pretrain.batch_size={config.pretrain.batch_size}"
    )
  lr = run_config.require_number(config, "pretrain.learning_rate", 0.0, low_open=True)
  with run_config.reading("pretrain.levels"):
    for level in config.pretrain.levels:
      generate.check_level(level)
  with run_config.reading("pretrain.style"):
    render.get_style(config.pretrain.style)
  with run_config.reading("optimizer"):
    run_config.optimizer_config(config, lr, decay_steps(config))
  task_weights(config)
  with run_config.reading("data_dir"):
    release_data.check_data_dir(config.data_dir)
  mesh = run_config.check_model_side(config)
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  for name in ("batch_size", "eval_batch_size"):
    if config.pretrain[name] % shards:
      raise run_config.ConfigError(
        f"config.pretrain.{name}={config.pretrain[name]}: must be a multiple of the "
        f"mesh's {shards} batch shards (data x fsdp)"
      )
  run_config.require_int(config, "checkpoint.every", 1)
  run_config.require_int(config, "checkpoint.keep", 1)
