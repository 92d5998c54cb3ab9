"""Evaluation metrics for ViGoRL episodes (issue: accuracy, crops per episode, unique coordinates, format errors,
ID vs OOD), with the reward's own scorer so that training and eval agree.

Per episode (``episode_record``):

- ``correct``: the scorer's accuracy is 1 (an episode without an answer is scored on its whole text, as upstream
  does, which is almost never right);
- ``format_ok``: the scorer's format is > 0; ``format_error_rate`` is the share that failed it;
- ``crops``: crop images the episode was shown; ``unique_coordinates``: the looked-at (multi-turn: tool-call;
  grounded thinking: cited) coordinates at least 10 px from every earlier one, greedily, as the exploration bonus
  counts them;
- ``finish_reason``: why it ended (``protocol.DONE_REASONS`` or the rollout's token budget, ``"length"``).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from vrrl_jax.tasks.vigorl import protocol, reward
from vrrl_jax.tasks.vigorl import spec as spec_lib

TOKEN_BUDGET = "length"
FINISH_REASONS = protocol.DONE_REASONS + (TOKEN_BUDGET,)
MIN_SPACING_PX = 10


@dataclasses.dataclass(frozen=True)
class EpisodeRecord:
  example_id: str
  kind: str
  question: str
  style: str
  ood: bool
  n_turns: int
  crops: int
  unique_coordinates: int
  finish_reason: str
  correct: bool
  format_ok: bool
  overall: float


def looked_at(turns: Sequence[str], protocol_name: str) -> list[tuple[int, int]]:
  if protocol_name == protocol.GROUNDED_THINKING:
    return [p for text in turns for p in protocol.cited_points(text)]
  return [t.point for t in map(protocol.read_turn, turns) if t.point is not None]


def spread_count(points: Sequence[tuple[int, int]]) -> int:
  kept: list[tuple[int, int]] = []
  for x, y in points:
    if all((x - a) ** 2 + (y - b) ** 2 >= MIN_SPACING_PX**2 for a, b in kept):
      kept.append((x, y))
  return len(kept)


def episode_record(
  spec, turns: Sequence[str], finish_reason: str, crops: int, config: reward.RewardConfig, example_id: str
) -> EpisodeRecord:
  if finish_reason not in FINISH_REASONS:
    raise ValueError(f"finish_reason must be one of {FINISH_REASONS}, got {finish_reason!r}")
  spec = spec_lib.parse_spec(spec)
  metrics = reward.score_turns(list(turns), spec, config)
  return EpisodeRecord(
    example_id=str(example_id),
    kind=spec.kind,
    question=spec.question,
    style=spec.style,
    ood=spec.is_ood,
    n_turns=len(turns),
    crops=int(crops),
    unique_coordinates=spread_count(looked_at(turns, config.protocol)),
    finish_reason=finish_reason,
    correct=metrics["accuracy"] == 1.0,
    format_ok=metrics["format"] > 0,
    overall=float(metrics["overall"]),
  )


def summarize(records: Sequence[EpisodeRecord]) -> dict:
  n = len(records)
  out = {
    "n": n,
    "accuracy": float(np.mean([r.correct for r in records])),
    "format_error_rate": float(np.mean([not r.format_ok for r in records])),
    "crops_per_episode": float(np.mean([r.crops for r in records])),
    "unique_coordinates_per_episode": float(np.mean([r.unique_coordinates for r in records])),
    "turns_per_episode": float(np.mean([r.n_turns for r in records])),
    "reward": float(np.mean([r.overall for r in records])),
  }
  for reason in FINISH_REASONS:
    out[f"finish_{reason}_rate"] = float(np.mean([r.finish_reason == reason for r in records]))
  return out


def aggregate(records: Sequence[EpisodeRecord]) -> dict:
  """Overall, in/out of distribution, and per question type."""
  records = list(records)
  if not records:
    raise ValueError("no episode records to aggregate")
  out = {"overall": summarize(records)}
  for name, ood in (("in_distribution", False), ("out_of_distribution", True)):
    chosen = [r for r in records if r.ood == ood]
    if chosen:
      out[name] = summarize(chosen)
  out["by_question"] = {
    q: summarize([r for r in records if r.question == q]) for q in sorted({r.question for r in records})
  }
  return out
