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

from vrrl_jax import evaluation, experiment, gallery
from vrrl_jax.data import frozenlake as frozenlake_data
from vrrl_jax.envs.frozenlake import maps, parse, protocol
from vrrl_jax.rewards import frozenlake as rewards_lib
from vrrl_jax.rl import prefix_buffer as buffer_lib
from vrrl_jax.sampling import episodes as episodes_lib

log = logging.getLogger(__name__)


def _eval_examples(config) -> list:
    from vrrl_jax.trainer import data_config

    cfg = data_config(config)
    out = []
    for level in config.eval.levels:
        examples = frozenlake_data.load_split(f"eval_L{level}", cfg)
        out.extend(examples[: int(config.eval.maps_per_level)])
    return out


def greedy_sampling(exp, config):
    from vrrl_jax.rl_loop import _suppressed
    from vrrl_jax.sampling.sampler import SamplingConfig

    return SamplingConfig(temperature=0.0, max_new_tokens=int(config.eval.max_new_tokens),
                          stop_token_ids=(exp.token_ids.im_end_id,), suppressed_token_ids=_suppressed(exp))


def _play_batched(exp, config, sampler, params, questions, max_turns: int):
    results = []
    batch = int(config.eval.batch_size)
    for start in range(0, len(questions), batch):
        results.extend(episodes_lib.play(exp, sampler, params, questions[start:start + batch], 1,
                                         greedy_sampling(exp, config), max_turns=max_turns,
                                         rng=jax.random.PRNGKey(0)))
    return results


def grounding_probe(exp, config, sampler, params, questions, results) -> dict:
    """Re-runs each corrected second turn with the plain map in place of the feedback image."""
    probes, originals = [], []
    for q, r in zip(questions, results):
        turns = [parse.parse_turn(t) for t in r.turns]
        if len(turns) < 2 or not (turns[0].ok and turns[0].is_route and turns[1].ok and turns[1].is_route):
            continue
        if maps.is_exact_match(q.spec, turns[0].actions) or not maps.is_exact_match(q.spec, turns[1].actions):
            continue
        entry = buffer_lib.PrefixEntry(
            spec=q.spec, prefix_type=buffer_lib.WRONG, collection_step=0, prompt_text=protocol.TASK_PROMPT,
            assistant_texts=(r.turns[0],), feedback_texts=(protocol.FEEDBACK_TEXT,), final_text="",
            map_image=q.map_image, feedback_images=(np.asarray(q.map_image),))
        probes.append(episodes_lib.Question.from_prefix(entry, map_id=q.map_id))
        originals.append(turns[1].actions)
    if not probes:
        return {"n_corrections": 0, "correction_survival_rate": float("nan"), "same_route_rate": float("nan")}
    reruns = _play_batched(exp, config, sampler, params, probes, max_turns=2)
    survived = same = 0
    for probe, rerun, original in zip(probes, reruns, originals):
        new_turns = rerun.turns[1:]  # the replayed first turn is part of the transcript
        parsed = parse.parse_turn(new_turns[0]) if new_turns else None
        if parsed is not None and parsed.ok and parsed.actions is not None:
            survived += int(maps.is_exact_match(probe.spec, parsed.actions))
            same += int(tuple(parsed.actions) == tuple(original))
    n = len(probes)
    return {"n_corrections": n, "correction_survival_rate": survived / n, "same_route_rate": same / n}


def evaluate(exp, config, params, outdir: pathlib.Path, *, sampler=None) -> dict:
    """Greedy episodes on the eval maps -> metrics dict (also written to ``outdir/metrics.json``) and gallery."""
    from vrrl_jax.sampling.sampler import Sampler

    outdir = pathlib.Path(outdir)
    sampler = sampler or Sampler(exp.model_config, pad_token_id=exp.token_ids.pad_token_id, mesh=exp.mesh)
    examples = _eval_examples(config)
    questions = [episodes_lib.Question(map_id=e.map_id, spec=e.spec, map_image=e.image) for e in examples]
    max_turns = int(config.eval.max_turns)
    results = _play_batched(exp, config, sampler, params, questions, max_turns)
    records = [evaluation.episode_record(q.map_id, q.spec, r.turns, r.finish_reason)
               for q, r in zip(questions, results)]
    metrics = evaluation.aggregate(records)
    metrics["grounding_probe"] = grounding_probe(exp, config, sampler, params, questions, results)

    reward_config = rewards_lib.RewardConfig.from_mapping(config.rl.reward.to_dict())
    scores = rewards_lib.score_batch([r.turns for r in results], [q.spec for q in questions], reward_config)
    metrics["reward"] = {k: float(np.mean(v)) for k, v in scores.items()}
    if jax.process_index() == 0:
        outdir.mkdir(parents=True, exist_ok=True)
        (outdir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
        episodes = []
        for i, (q, r, rec) in enumerate(zip(questions, results, records)):
            episodes.append({"map_id": q.map_id, "level": q.spec.level, "spec": q.spec.to_dict(),
                             "map_image": q.map_image, "turns": list(r.turns),
                             "feedback_images": list(r.feedback_images), "mode": "eval",
                             "metrics": {"optimal": float(rec.optimal), "strict": float(rec.strict),
                                         "finish": rec.finish_reason,
                                         **{k: float(scores[k][i]) for k in ("overall", "format", "reflection")}}})
        order = np.argsort([-(len(e["turns"])) for e in episodes], kind="stable")  # multi-turn episodes first
        gallery.write_gallery(outdir / "gallery.html", [episodes[i] for i in order],
                              max_episodes=int(config.eval.gallery_episodes), title=f"VRRL eval: {outdir.name}")
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
    out["grounding/correction_survival_rate"] = metrics["grounding_probe"]["correction_survival_rate"]
    return out


def main(argv=None) -> None:
    import argparse

    from ml_collections import config_flags  # noqa: F401  (config files import ml_collections)

    parser = argparse.ArgumentParser(description="Greedy FrozenLake evaluation")
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True,
                        help="a training checkpoint dir (workdir/checkpoints) or an HF / converted model dir")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = _load_config(args.config)
    params = _load_params(config, args.checkpoint)
    exp = experiment.build(config)
    evaluate(exp, config, params, pathlib.Path(args.out))


def _load_config(path: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("vrrl_eval_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


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
