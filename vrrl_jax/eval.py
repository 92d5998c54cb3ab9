r"""Greedy multi-turn evaluation on the task's eval examples (FrozenLake: L3-L7, VRRL_SPEC section 5), a rollout
gallery, and the grounding probe.

  python -m vrrl_jax.eval --config configs/frozenlake_tiny_cpu.py --checkpoint runs/demo/checkpoints \
      --out runs/demo/eval
  python -m vrrl_jax.eval --config configs/frozenlake_qwen25vl_3b.py --checkpoint /path/hf_or_orbax_dir --out DIR

``--checkpoint`` is a training checkpoint directory (the newest readable step is used), or a Hugging Face /
converted orbax model directory. Writes ``metrics.json`` (the task's aggregate, e.g. per level, in- and
out-of-distribution and overall; the reward; the grounding probe), ``episodes.jsonl`` (one line per eval example: its
record, its reward and, for a probed correction, whether it survived; what confidence intervals are computed from)
and ``gallery.html`` (every turn's text and feedback image).

Grounding probe. For every episode whose second turn corrected a wrong first proposal (the task's
``is_correct``: the first is wrong, the second right), the second turn is generated again with the feedback image
replaced by the question's own image (no route or point drawn), everything else identical. A model that reads the feedback image should lose many of
its corrections (``correction_survival_rate`` low); one that reasons from its own text alone keeps them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib

import jax
import numpy as np

from vrrl_jax import experiment, gallery, rl_loop, run_config, run_state
from vrrl_jax.rl import prefix_buffer as buffer_lib
from vrrl_jax.sampling import rollout as rollout_lib

log = logging.getLogger(__name__)


def _play(exp, config, sampler, params, specs, *, style: str, max_turns: int, prefixes=None):
  """Greedy rollouts in batches of ``config.eval.batch_size``."""
  cfg = run_config.rollout_config(config, greedy=True, max_turns=max_turns, style=style)
  out, batch = [], int(config.eval.batch_size)
  for start in range(0, len(specs), batch):
    chunk = slice(start, start + batch)
    out.extend(
      rollout_lib.rollout(
        exp.task,
        sampler,
        exp.processor,
        params,
        specs[chunk],
        1,
        prefixes=None if prefixes is None else prefixes[chunk],
        config=cfg,
        rng=jax.random.PRNGKey(0),
      )
    )
  return out


def grounding_probe(exp, config, sampler, params, examples, trajectories) -> tuple[dict, dict[int, bool]]:
  """Re-runs each corrected second turn with the question's image in place of the feedback image.

  Returns the summary and, per probed example's index, whether its correction survived."""
  task = exp.task
  options = task.episode_options(config)
  entries, originals, styles, indices = [], [], [], []
  for index, (ex, t) in enumerate(zip(examples, trajectories)):
    proposals = [task.read_proposal(text, **options) for text in t.turns[:2]]
    if len(proposals) < 2 or proposals[0] is None or proposals[1] is None:
      continue
    if task.is_correct(t.spec, proposals[0], **options) or not task.is_correct(t.spec, proposals[1], **options):
      continue
    entries.append(
      buffer_lib.PrefixEntry(
        spec=t.spec,
        prefix_type=buffer_lib.WRONG,
        collection_step=0,
        prompt_text=t.prompt_text,
        assistant_texts=(t.turns[0],),
        feedback_texts=(t.feedback_texts[0],),
        final_text="",
        map_image=t.map_image,
        feedback_images=(t.map_image,),
      )
    )
    originals.append(proposals[1])
    styles.append(ex.style)
    indices.append(index)
  if not entries:  # no correction to probe: the rates are undefined, so absent (not NaN)
    return {"n_corrections": 0}, {}
  outcomes, same = {}, 0
  for style in sorted(set(styles)):
    sel = [i for i, s in enumerate(styles) if s == style]
    reruns = _play(
      exp,
      config,
      sampler,
      params,
      [entries[i].spec for i in sel],
      style=style,
      max_turns=2,
      prefixes=[entries[i] for i in sel],
    )
    for i, rerun in zip(sel, reruns):
      new_turns = rerun.turns[1:]  # the replayed first turn leads the transcript
      proposal = task.read_proposal(new_turns[0], **options) if new_turns else None
      outcomes[indices[i]] = proposal is not None and bool(task.is_correct(entries[i].spec, proposal, **options))
      same += int(proposal is not None and proposal == originals[i])
  n = len(entries)
  summary = {"n_corrections": n, "correction_survival_rate": sum(outcomes.values()) / n, "same_route_rate": same / n}
  return summary, outcomes


def evaluate(exp, config, params, outdir: pathlib.Path, *, sampler=None, links=()) -> dict:
  """Greedy episodes on the task's eval examples -> metrics dict (also ``outdir/metrics.json``) and gallery."""
  task = exp.task
  outdir = pathlib.Path(outdir)
  sampler = sampler or experiment.make_sampler(exp, run_config.sampler_buckets(config))
  examples = task.eval_examples(config)
  max_turns = int(config.eval.max_turns)
  trajectories = [None] * len(examples)
  for style in sorted({e.style for e in examples}):  # the renderer style is per rollout call
    sel = [i for i, e in enumerate(examples) if e.style == style]
    for i, t in zip(
      sel, _play(exp, config, sampler, params, [examples[i].spec for i in sel], style=style, max_turns=max_turns)
    ):
      trajectories[i] = t
  records = [task.episode_record(e, t) for e, t in zip(examples, trajectories)]
  metrics = task.aggregate(records)
  metrics["grounding_probe"], probe_outcomes = grounding_probe(exp, config, sampler, params, examples, trajectories)

  reward_config = run_config.reward_config(config)
  scores = task.score_batch([t.turns for t in trajectories], [t.spec for t in trajectories], reward_config)
  metrics["reward"] = {k: float(np.mean(v)) for k, v in scores.items()}
  if jax.process_index() == 0:
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    with open(outdir / "episodes.jsonl", "w") as f:
      for i, rec in enumerate(records):
        line = {
          "index": i,
          "group": task.group_of(trajectories[i].spec),
          "record": dataclasses.asdict(rec),
          "reward": {k: float(v[i]) for k, v in scores.items()},
          "correction_survived": probe_outcomes.get(i),
        }
        f.write(json.dumps(line, default=_json_value) + "\n")
    episodes, options = [], task.episode_options(config)
    for i, (e, t, rec) in enumerate(zip(examples, trajectories, records)):
      episodes.append(
        {
          "map_id": e.map_id,
          "level": task.group_of(t.spec),
          "description": task.describe(t.spec),
          "map_image": task.gallery_image(t.spec, t.map_image, t.turns, **options),
          "turns": list(t.turns),
          "feedback_images": list(t.feedback_images),
          "mode": "eval",
          "metrics": {
            **task.record_metrics(rec),
            **{k: float(scores[k][i]) for k in ("overall", "format", "reflection") if k in scores},
          },
        }
      )
    order = np.argsort([-(len(e["turns"])) for e in episodes], kind="stable")  # multi-turn episodes first
    gallery.write_gallery(
      outdir / "gallery.html",
      [episodes[i] for i in order],
      max_episodes=int(config.eval.gallery_episodes),
      title=f"VRRL eval: {outdir.name}",
      links=links,
    )
  log.info("eval %s: %s", outdir.name, json.dumps(headline(task, metrics)))
  return metrics


def headline(task, metrics: dict) -> dict[str, float]:
  """The numbers logged per eval: the task's headline, the mean reward, the grounding probe."""
  out = dict(task.headline(metrics))
  out["reward/overall"] = metrics["reward"]["overall"]
  out["grounding/n_corrections"] = metrics["grounding_probe"]["n_corrections"]
  if "correction_survival_rate" in metrics["grounding_probe"]:
    out["grounding/correction_survival_rate"] = metrics["grounding_probe"]["correction_survival_rate"]
  return out


def main(argv=None) -> None:
  import argparse

  from ml_collections import config_flags  # noqa: F401  (config files import ml_collections)

  parser = argparse.ArgumentParser(description="Greedy evaluation of a checkpoint on the config's task")
  parser.add_argument("--config", required=True)
  parser.add_argument(
    "--checkpoint", required=True, help="a training checkpoint dir (workdir/checkpoints) or an HF / converted model dir"
  )
  parser.add_argument("--out", required=True)
  parser.add_argument("--step", type=int, default=None, help="a training checkpoint's step (default: the newest)")
  # The rest: --config.key=value overrides, as the training run takes them (e.g. --config.eval.maps_per_level=250).
  args, overrides = parser.parse_known_args(argv)
  experiment.setup_console()
  experiment.enable_compilation_cache()
  try:
    config = experiment.load_config(args.config, overrides)
    run_config.validate(config)
  except ValueError as e:  # ConfigError is a ValueError
    raise SystemExit(f"bad config: {e}") from None
  params = load_params(config, args.checkpoint, args.step)
  exp = experiment.build(config)
  evaluate(exp, config, params, pathlib.Path(args.out))


def _json_value(value):
  """numpy scalars in a record (a level as np.int64) as Python numbers."""
  if isinstance(value, np.generic):
    return value.item()
  raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def load_params(config, checkpoint: str, step: int | None = None):
  path = pathlib.Path(checkpoint)
  if (path / "config.json").is_file() or (path / "vrrl_config.json").is_file():
    if step is not None:
      raise SystemExit(f"--step is for training checkpoints; {path} is a model directory")
    config.unlock()
    config.init_checkpoint = str(path)
    exp = experiment.build(config)
    params, _ = experiment.initial_params(exp, int(config.seed))
    return params
  from vrrl_jax.checkpoints.train_checkpoint import TrainCheckpointer

  exp = experiment.build(config)
  params, specs = experiment.initial_params(exp, int(config.seed))
  ckpt = TrainCheckpointer(path, save_every=1, keep=1000)
  resumed = run_state.resume(ckpt, exp, config, params, specs, rl_loop.make_buffer(exp.task, config), step=step)
  if resumed is None:
    raise FileNotFoundError(f"no checkpoint under {path}")
  progress, state = resumed
  log.info("evaluating step %d (%s)", progress.global_step, progress.phase)
  return state.params


if __name__ == "__main__":
  main()
