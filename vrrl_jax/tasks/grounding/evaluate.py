"""Evaluation metrics for grounding episodes, overall, per kind and per in-/out-of-distribution style.

Per episode (``episode_record``), with the reward's definitions (``reward``) so training and eval agree:

- ``correct``: the answer is correct by the reward's ``correct_rule``; an episode without a parseable answer (it hit
  the turn budget, stopped early, or ran out of tokens) is not correct;
- ``correct_turn1``: the first turn's point (its pointing call, or its answer) is correct: accuracy had the model
  committed at once. ``turn1_to_final_delta`` = accuracy - turn-1 accuracy is what looking again bought;
- ``dist_turn1`` / ``dist_final``: normalised distances to the target point (``reward.normalized_distance``);
- ``crops``: feedback images the episode was shown (``protocol.decide_step`` replayed, no pixels);
- ``format_ok``: the reward's format gate passed. ``format_error_rate`` in the summary is the share that failed it
  (any malformed turn, no answer, a repeated or off-image point, ...); ``finish_<reason>_rate`` splits episodes by
  why they ended.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

from vrrl_jax.tasks.grounding import parse, protocol, reward, scenes, styles

TOKEN_BUDGET = "length"  # the rollout's finish reason when the sequence budget ran out before the episode ended
FINISH_REASONS = protocol.DONE_REASONS + (TOKEN_BUDGET,)


@dataclasses.dataclass(frozen=True)
class EpisodeRecord:
  example_id: str
  kind: str
  style: str
  ood: bool
  n_turns: int
  n_points: int
  crops: int
  finish_reason: str
  correct: bool
  correct_turn1: bool
  dist_turn1: float
  dist_final: float
  format_ok: bool


def count_crops(spec, turns: Sequence[str], max_turns: int, point_format: str = parse.DEFAULT_POINT_FORMAT) -> int:
  """How many feedback images the episode showed (the environment's rules replayed without rendering)."""
  spec = scenes.parse_spec(spec)
  earlier: list[tuple[int, int]] = []
  crops = 0
  for i, text in enumerate(reward.check_turns(turns)):
    turn = parse.parse_turn(text, point_format)
    decision = protocol.decide_step(turn, earlier, i + 1, max_turns, spec.size)
    if decision.done:
      break
    crops += decision.feedback == protocol.CROP
    if turn.point is not None:
      earlier.append(turn.point)
  return crops


def episode_record(
  spec,
  turns: Sequence[str],
  finish_reason: str,
  *,
  config: reward.RewardConfig | None = None,
  max_turns: int = protocol.EVAL_MAX_TURNS,
  example_id: str | None = None,
) -> EpisodeRecord:
  if finish_reason not in FINISH_REASONS:
    raise ValueError(f"finish_reason must be one of {FINISH_REASONS}, got {finish_reason!r}")
  config = reward.RewardConfig() if config is None else config
  spec = scenes.parse_spec(spec)
  metrics = reward.score_turns(turns, spec, config)
  return EpisodeRecord(
    example_id=scenes.spec_hash(spec)[:16] if example_id is None else str(example_id),
    kind=spec.kind,
    style=spec.style,
    ood=styles.get_style(spec.style).ood,
    n_turns=int(metrics["n_turns"]),
    n_points=int(metrics["n_points"]),
    crops=count_crops(spec, turns, max_turns, config.point_format),
    finish_reason=finish_reason,
    correct=bool(metrics["correct"]),
    correct_turn1=bool(metrics["correct_turn1"]),
    dist_turn1=metrics["dist_turn1"],
    dist_final=metrics["dist_final"],
    format_ok=metrics["format"] > 0.0,
  )


def summarize(records: Sequence[EpisodeRecord]) -> dict[str, float]:
  n = len(records)
  if n == 0:
    raise ValueError("no episodes to summarize")

  def mean(values) -> float:
    return float(sum(values)) / n

  accuracy = mean(r.correct for r in records)
  turn1 = mean(r.correct_turn1 for r in records)
  out = {
    "n": n,
    "accuracy": accuracy,
    "accuracy_turn1": turn1,
    "accuracy_final": accuracy,
    "turn1_to_final_delta": accuracy - turn1,
    "mean_dist_turn1": mean(r.dist_turn1 for r in records),
    "mean_dist_final": mean(r.dist_final for r in records),
    "crops_per_episode": mean(r.crops for r in records),
    "avg_turns": mean(r.n_turns for r in records),
    "format_error_rate": mean(not r.format_ok for r in records),
  }
  for reason in FINISH_REASONS:
    out[f"finish_{reason}_rate"] = mean(r.finish_reason == reason for r in records)
  return out


def aggregate(records: Iterable[EpisodeRecord]) -> dict:
  """``overall``, ``in_distribution`` / ``out_of_distribution`` (by the style) and ``by_kind`` summaries (a group
  only when it has records)."""
  records = list(records)
  out: dict = {"overall": summarize(records)}
  for name, ood in (("in_distribution", False), ("out_of_distribution", True)):
    group = [r for r in records if r.ood == ood]
    if group:
      out[name] = summarize(group)
  out["by_kind"] = {
    kind: summarize([r for r in records if r.kind == kind]) for kind in sorted({r.kind for r in records})
  }
  return out
