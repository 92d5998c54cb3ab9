"""The ViGoRL reward of a rollout batch: the scorer of ``vrrl_jax.rewards.vigorl`` that the protocol and the answer
type call for (GROUNDING_SPEC section 2), on the response stream the protocol rebuilds.

- multi-turn, point answer: ``point_in_bbox_multicrop``; multi-turn, word answer: ``string_match_multiturn``;
- grounded thinking, point: ``point_in_bbox_grounded_thinking``; word: ``string_match_grounded_thinking``.

The replay buffer's fields change nothing here (ViGoRL has no buffer); they are accepted so VRRL's modes can run.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from vrrl_jax.rewards import vigorl as scorers
from vrrl_jax.tasks.vigorl import protocol
from vrrl_jax.tasks.vigorl import spec as spec_lib
from vrrl_jax.tasks.vigorl.scene import POINT

METRIC_KEYS = ("overall", "format", "accuracy")
SCORERS = {
  (protocol.MULTI_TURN, True): scorers.point_in_bbox_multicrop,
  (protocol.MULTI_TURN, False): scorers.string_match_multiturn,
  (protocol.GROUNDED_THINKING, True): scorers.point_in_bbox_grounded_thinking,
  (protocol.GROUNDED_THINKING, False): scorers.string_match_grounded_thinking,
}


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  """What scoring needs besides the spec: the protocol and whether observations mention the dot."""

  protocol: str = protocol.MULTI_TURN
  dot: bool = False

  def __post_init__(self):
    if self.protocol not in protocol.PROTOCOLS:
      raise ValueError(f"protocol must be one of {protocol.PROTOCOLS}, got {self.protocol!r}")
    if not isinstance(self.dot, bool):
      raise ValueError(f"dot must be a bool, got {self.dot!r}")


def scorer_for(spec, config: RewardConfig):
  return SCORERS[(config.protocol, spec_lib.scene_of(spec).answer_type == POINT)]


def score_turns(turns: Sequence[str], spec, config: RewardConfig) -> dict[str, float]:
  if config.protocol == protocol.GROUNDED_THINKING:
    text = "".join(turns)
  else:
    text = protocol.response(turns, config.dot)
  return scorer_for(spec, config)(text, spec_lib.ground_truth(spec))


def score_batch(
  turns_batch: Sequence[Sequence[str]], specs: Sequence, config: RewardConfig, buffer_fields: Mapping | None = None
) -> dict[str, np.ndarray]:
  del buffer_fields
  turns_batch, specs = list(turns_batch), list(specs)
  if len(turns_batch) != len(specs):
    raise ValueError(f"got {len(turns_batch)} transcripts but {len(specs)} specs")
  out = {key: np.zeros(len(specs), np.float64) for key in METRIC_KEYS}
  for i, (turns, spec) in enumerate(zip(turns_batch, specs)):
    metrics = score_turns(list(turns), spec, config)
    for key in METRIC_KEYS:
      out[key][i] = metrics[key]
  return out
