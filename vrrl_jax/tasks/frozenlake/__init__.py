"""FrozenLake spatial navigation (VRRL_SPEC): the task surface the run is handed (``vrrl_jax.tasks.Task``).

The pieces live in this package's modules: ``maps``/``parse``/``render``/``protocol`` (the environment), ``data``
(splits), ``reward``, ``transcripts`` (SFT), ``evaluation`` (metrics); these functions join them to the run config.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from vrrl_jax.tasks.frozenlake import data, evaluation, maps, parse, protocol, render, reward, transcripts

TRAIN_MAX_TURNS, EVAL_MAX_TURNS = protocol.TRAIN_MAX_TURNS, protocol.EVAL_MAX_TURNS
REVISION_OPENING = "<THINK>"
EVAL_KEYS = ("levels", "maps_per_level")
SUCCESS_METRIC = "em"  # the reward metric that says the committed answer was right
TURN_STOP_STRINGS = ()  # a turn ends at <|im_end|> only


def _section(value) -> dict:
  return value.to_dict() if hasattr(value, "to_dict") else dict(value)


# --- Data -----------------------------------------------------------------------------------------------------------


def data_config(config) -> data.FrozenLakeDataConfig:
  """``config.data``, checked."""
  fields = _section(config.data)
  for name in ("generated_eval_levels", "generated_train_levels"):
    if name in fields:
      fields[name] = tuple(fields[name])
  return data.FrozenLakeDataConfig(**fields).validate()


def check_eval_config(config) -> None:
  """Every level in ``config.eval.levels`` has an eval split; ``maps_per_level`` is a positive int."""
  splits = set(data_config(config).splits)
  for level in tuple(config.eval.levels):
    if isinstance(level, bool) or not isinstance(level, int) or f"eval_L{level}" not in splits:
      raise ValueError(f"levels: level {level!r} has no eval split; the data config gives {sorted(splits)}")
  n = config.eval.maps_per_level
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f"maps_per_level must be a positive int, got {n!r}")


def train_examples(config) -> list[data.Example]:
  return data.load_split("train", data_config(config))


def eval_examples(config) -> list[data.Example]:
  """The first ``config.eval.maps_per_level`` maps of each level in ``config.eval.levels``."""
  cfg = data_config(config)
  out = []
  for level in config.eval.levels:
    out.extend(data.load_split(f"eval_L{level}", cfg)[: int(config.eval.maps_per_level)])
  return out


def parse_spec(spec) -> maps.MapSpec:
  return maps.parse_spec(spec)


def max_image_side(config) -> int:
  """A render is (level + 2) cells a side at most (a route may leave the map by one cell on each side:
  ``render.canvas_margins``), at the train style's cell size."""
  cfg = data_config(config)
  level = max(spec.level for _, spec, _ in data.iter_specs("train", cfg))
  return (level + 2) * render.get_style(cfg.train_style).cell_px


# --- Episodes and reward --------------------------------------------------------------------------------------------


def episode_options(config) -> dict[str, Any]:
  """None: FrozenLake's text has one format."""
  del config
  return {}


def new_episode(spec, *, max_turns: int, style: str) -> protocol.Episode:
  return protocol.Episode(spec, max_turns=max_turns, style=style)


def reward_config(config) -> reward.RewardConfig:
  return reward.RewardConfig.from_mapping(_section(config.rl.reward))


def score_batch(turns_batch, specs, reward_config, buffer_fields: Mapping | None = None) -> dict[str, np.ndarray]:
  return reward.score_batch(turns_batch, specs, reward_config, buffer_fields)


# --- SFT ------------------------------------------------------------------------------------------------------------


def transcript_config(config) -> transcripts.TranscriptConfig:
  """``config.sft.transcripts``, drawn in the training maps' render style (``config.data.train_style``)."""
  options = _section(config.sft.transcripts)
  train_style = data_config(config).train_style
  if options.setdefault("style", train_style) != train_style:
    raise ValueError(
      f"sft.transcripts.style={options['style']!r} differs from data.train_style={train_style!r}: "
      "the SFT images would not look like the RL and eval ones"
    )
  return transcripts.TranscriptConfig.from_mapping(options)


def sft_messages(
  spec, rng: np.random.Generator, transcript_config: transcripts.TranscriptConfig, wrong_turn_loss: bool
) -> list[dict]:
  """One reflection transcript as chat messages. ``wrong_turn_loss=False``: its deliberately wrong routes stay in
  the context (the revision after them still learns to read their feedback image) but carry no loss."""
  tr = transcripts.make_transcript(spec, rng, transcript_config)
  messages = transcripts.to_messages(tr)
  if not wrong_turn_loss:
    assistant = [m for m in messages if m["role"] == "assistant"]
    for m in assistant[: len(tr.wrong_kinds)]:  # the wrong routes are the first assistant turns
      m["loss"] = False
  return messages


# --- Replay buffer and the grounding probe --------------------------------------------------------------------------


def prefix_verdict(spec, assistant_texts: Sequence[str], max_route_turns: int) -> tuple[str | None, str | None]:
  """A clean episode (route turns, then a parseable FINAL) becomes a ``right`` or ``wrong`` prefix by whether its
  FINAL is an exact match; anything else is skipped with the reason."""
  turns = [parse.parse_turn(text) for text in assistant_texts]
  if not turns:
    return None, "no_turns"
  if not (turns[-1].is_final and turns[-1].ok):
    return None, "no_final"
  # The rollout ends an episode at its first FINAL or unparseable turn, so every earlier turn of a clean episode is
  # a parseable route; anything else is not a clean prefix.
  if not all(t.is_route and t.ok for t in turns[:-1]):
    return None, "unclean_prefix"
  n_routes = len(turns) - 1
  if n_routes < 1:
    return None, "no_route"
  if n_routes > max_route_turns:
    return None, "too_many_routes"
  spec = maps.parse_spec(spec)
  if maps.shortest_path_len(spec) is None:
    return None, "unreachable_goal"
  return ("right" if maps.is_exact_match(spec, turns[-1].actions) else "wrong"), None


def read_proposal(text: str) -> tuple[str, ...] | None:
  """A route turn's actions; None for a FINAL or an unparseable turn."""
  turn = parse.parse_turn(text)
  return tuple(turn.actions) if turn.ok and turn.is_route and turn.actions is not None else None


def is_correct(spec, proposal) -> bool:
  return maps.is_exact_match(spec, list(proposal))


# --- Evaluation -----------------------------------------------------------------------------------------------------


def episode_record(example, trajectory) -> evaluation.EpisodeRecord:
  return evaluation.episode_record(example.map_id, trajectory.spec, trajectory.turns, trajectory.finish_reason)


def aggregate(records) -> dict:
  return evaluation.aggregate(records)


def headline(metrics: Mapping) -> dict[str, float]:
  """The numbers logged per eval: optimal_rate per level and split, format errors."""
  out = {f"{k}/optimal_rate": v["optimal_rate"] for k, v in metrics["by_level"].items()}
  for split in ("in_distribution", "out_of_distribution"):
    if split in metrics:
      out[f"{split}/optimal_rate"] = metrics[split]["optimal_rate"]
  out["overall/optimal_rate"] = metrics["overall"]["optimal_rate"]
  out["overall/format_error_rate"] = metrics["overall"]["format_error_rate"]
  return out


EVAL_BAR_METRIC = "optimal_rate"


def eval_bars(metrics: Mapping) -> dict[str, float]:
  """optimal_rate per level, L3 first."""
  by_level = metrics["by_level"]
  return {level: by_level[level]["optimal_rate"] for level in sorted(by_level, key=lambda s: int(s[1:]))}


def record_metrics(record: evaluation.EpisodeRecord) -> dict[str, Any]:
  return {"optimal": float(record.optimal), "strict": float(record.strict), "finish": record.finish_reason}


def group_of(spec) -> int:
  return maps.parse_spec(spec).level


def gallery_image(spec, image, turns: Sequence[str]):
  """The map as the model saw it (each route has its own feedback image on the card)."""
  del spec, turns
  return image


def describe(spec) -> str:
  """The map as text for a gallery card: layout, start, goal, shortest route length."""
  spec = maps.parse_spec(spec)
  n_opt = maps.shortest_path_len(spec)
  layout = "\n".join(spec.layout)
  return (
    f"{layout}\nstart {spec.start_pos}, goal {spec.target_pos}, shortest route {'none' if n_opt is None else n_opt}"
  )
