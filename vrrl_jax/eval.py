r"""Greedy multi-turn evaluation on FrozenLake L3-L7 (VRRL_SPEC section 5), a rollout gallery, and the grounding
probe.

  python -m vrrl_jax.eval --config configs/frozenlake_tiny_cpu.py --checkpoint runs/demo/checkpoints \
      --out runs/demo/eval
  python -m vrrl_jax.eval --config configs/frozenlake_qwen25vl_3b.py --checkpoint /path/hf_or_orbax_dir --out DIR

``--checkpoint`` is a training checkpoint directory (the newest readable step is used), or a Hugging Face /
converted orbax model directory. Writes ``metrics.json`` (per level, in-distribution L3-5 and out-of-distribution
L6-7 averages, overall, grounding probe) and ``gallery.html`` (every turn's text and feedback image).

Grounding probe. For every episode whose second turn corrected a wrong first route (the first route is not an
exact match, the second is), the second turn is generated again with the feedback image replaced by the plain
map (no route drawn), everything else identical. A model that reads the feedback image should lose many of
its corrections (``correction_survival_rate`` low); one that reasons from its own text alone keeps them.
"""

from __future__ import annotations

import json
import logging
import pathlib

import jax
import numpy as np

from vrrl_jax import experiment, gallery, run_config
from vrrl_jax.tasks.frozenlake import evaluation
from vrrl_jax.tasks.frozenlake import data as frozenlake_data
from vrrl_jax.tasks.frozenlake import maps, parse, protocol
from vrrl_jax.tasks.frozenlake import reward as rewards_lib
from vrrl_jax.rl import prefix_buffer as buffer_lib
from vrrl_jax.sampling import rollout as rollout_lib

log = logging.getLogger(__name__)


def _eval_examples(config) -> list:
  cfg = run_config.data_config(config)
  out = []
  for level in config.eval.levels:
    examples = frozenlake_data.load_split(f"eval_L{level}", cfg)
    out.extend(examples[: int(config.eval.maps_per_level)])
  return out


def _play(exp, config, sampler, params, specs, *, style: str, max_turns: int, prefixes=None):
  """Greedy rollouts in batches of ``config.eval.batch_size``."""
  cfg = run_config.rollout_config(config, greedy=True, max_turns=max_turns, style=style)
  out, batch = [], int(config.eval.batch_size)
  for start in range(0, len(specs), batch):
    chunk = slice(start, start + batch)
    out.extend(
      rollout_lib.rollout(
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


def grounding_probe(exp, config, sampler, params, examples, trajectories) -> dict:
  """Re-runs each corrected second turn with the plain map in place of the feedback image."""
  entries, originals, styles = [], [], []
  for ex, t in zip(examples, trajectories):
    turns = [parse.parse_turn(text) for text in t.turns]
    if len(turns) < 2 or not (turns[0].ok and turns[0].is_route and turns[1].ok and turns[1].is_route):
      continue
    if maps.is_exact_match(t.spec, turns[0].actions) or not maps.is_exact_match(t.spec, turns[1].actions):
      continue
    entries.append(
      buffer_lib.PrefixEntry(
        spec=t.spec,
        prefix_type=buffer_lib.WRONG,
        collection_step=0,
        prompt_text=t.prompt_text,
        assistant_texts=(t.turns[0],),
        feedback_texts=(protocol.FEEDBACK_TEXT,),
        final_text="",
        map_image=t.map_image,
        feedback_images=(t.map_image,),
      )
    )
    originals.append(turns[1].actions)
    styles.append(ex.style)
  if not entries:  # no correction to probe: the rates are undefined, so absent (not NaN)
    return {"n_corrections": 0}
  survived = same = 0
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
      parsed = parse.parse_turn(new_turns[0]) if new_turns else None
      if parsed is not None and parsed.ok and parsed.actions is not None:
        survived += int(maps.is_exact_match(entries[i].spec, parsed.actions))
        same += int(tuple(parsed.actions) == tuple(originals[i]))
  n = len(entries)
  return {"n_corrections": n, "correction_survival_rate": survived / n, "same_route_rate": same / n}


def evaluate(exp, config, params, outdir: pathlib.Path, *, sampler=None, links=()) -> dict:
  """Greedy episodes on the eval maps -> metrics dict (also written to ``outdir/metrics.json``) and gallery."""
  outdir = pathlib.Path(outdir)
  sampler = sampler or experiment.make_sampler(exp, run_config.sampler_buckets(config))
  examples = _eval_examples(config)
  max_turns = int(config.eval.max_turns)
  trajectories = [None] * len(examples)
  for style in sorted({e.style for e in examples}):  # the renderer style is per rollout call
    sel = [i for i, e in enumerate(examples) if e.style == style]
    for i, t in zip(
      sel, _play(exp, config, sampler, params, [examples[i].spec for i in sel], style=style, max_turns=max_turns)
    ):
      trajectories[i] = t
  records = [
    evaluation.episode_record(e.map_id, t.spec, t.turns, t.finish_reason) for e, t in zip(examples, trajectories)
  ]
  metrics = evaluation.aggregate(records)
  metrics["grounding_probe"] = grounding_probe(exp, config, sampler, params, examples, trajectories)

  reward_config = run_config.reward_config(config)
  scores = rewards_lib.score_batch([t.turns for t in trajectories], [t.spec for t in trajectories], reward_config)
  metrics["reward"] = {k: float(np.mean(v)) for k, v in scores.items()}
  if jax.process_index() == 0:
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    episodes = []
    for i, (e, t, rec) in enumerate(zip(examples, trajectories, records)):
      episodes.append(
        {
          "map_id": e.map_id,
          "level": t.spec.level,
          "spec": t.spec.to_dict(),
          "map_image": t.map_image,
          "turns": list(t.turns),
          "feedback_images": list(t.feedback_images),
          "mode": "eval",
          "metrics": {
            "optimal": float(rec.optimal),
            "strict": float(rec.strict),
            "finish": rec.finish_reason,
            **{k: float(scores[k][i]) for k in ("overall", "format", "reflection")},
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
  log.info("eval %s: %s", outdir.name, json.dumps(headline(metrics)))
  return metrics


def headline(metrics: dict) -> dict[str, float]:
  out = {f"{k}/optimal_rate": v["optimal_rate"] for k, v in metrics["by_level"].items()}
  for split in ("in_distribution", "out_of_distribution"):
    if split in metrics:
      out[f"{split}/optimal_rate"] = metrics[split]["optimal_rate"]
  out["overall/optimal_rate"] = metrics["overall"]["optimal_rate"]
  out["overall/format_error_rate"] = metrics["overall"]["format_error_rate"]
  out["reward/overall"] = metrics["reward"]["overall"]
  out["grounding/n_corrections"] = metrics["grounding_probe"]["n_corrections"]
  if "correction_survival_rate" in metrics["grounding_probe"]:
    out["grounding/correction_survival_rate"] = metrics["grounding_probe"]["correction_survival_rate"]
  return out


def main(argv=None) -> None:
  import argparse

  from ml_collections import config_flags  # noqa: F401  (config files import ml_collections)

  parser = argparse.ArgumentParser(description="Greedy FrozenLake evaluation")
  parser.add_argument("--config", required=True)
  parser.add_argument(
    "--checkpoint", required=True, help="a training checkpoint dir (workdir/checkpoints) or an HF / converted model dir"
  )
  parser.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  experiment.setup_console()
  experiment.enable_compilation_cache()
  config = experiment.load_config(args.config)
  try:
    run_config.validate(config)
  except run_config.ConfigError as e:
    raise SystemExit(f"bad config: {e}") from None
  params = _load_params(config, args.checkpoint)
  exp = experiment.build(config)
  evaluate(exp, config, params, pathlib.Path(args.out))


def _load_params(config, checkpoint: str):
  path = pathlib.Path(checkpoint)
  if (path / "config.json").is_file() or (path / "vrrl_config.json").is_file():
    config.unlock()
    config.init_checkpoint = str(path)
    exp = experiment.build(config)
    params, _ = experiment.initial_params(exp, int(config.seed))
    return params
  from vrrl_jax.checkpoints.train_checkpoint import TrainCheckpointer
  from vrrl_jax.trainer import _resume

  exp = experiment.build(config)
  params, specs = experiment.initial_params(exp, int(config.seed))
  ckpt = TrainCheckpointer(path, save_every=1, keep=1000)
  from vrrl_jax.rl_loop import make_buffer

  resumed = _resume(ckpt, exp, config, params, specs, make_buffer(config))
  if resumed is None:
    raise FileNotFoundError(f"no checkpoint under {path}")
  progress, state = resumed
  log.info("evaluating step %d (%s)", progress.global_step, progress.phase)
  return state.params


if __name__ == "__main__":
  main()
