"""VRRL's visual grounding on tables and charts ("point, crop, look again"), GROUNDING_SPEC sections 1, 3 and 4: the
task surface the run is handed (``vrrl_jax.tasks.Task``).

Modules, one idea each: ``styles`` (looks, ID vs OOD), ``content`` (labels, numbers, questions), ``scenes`` (the
spec, layout, pixels), ``coords`` (processor resize of coordinates), ``splits`` (train / eval specs, disjoint),
``feedback`` (dot and crop), ``parse`` (one assistant turn), ``protocol`` (the episode), ``reward``, ``prefixes``
(what the replay buffer needs), ``transcripts`` (scripted SFT data), ``evaluate`` and ``gallery``.

Config sections this task reads: ``data`` (``DataConfig``: split sizes, seeds, size preset, kinds, crop side),
``sft.transcripts`` (``transcripts.TranscriptConfig``), ``rl.reward`` (``reward.RewardConfig``, whose
``point_format`` the episodes and transcripts share), ``eval.splits`` and ``eval.examples_per_split``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import numpy as np

from vrrl_jax.tasks.grounding import evaluate, parse, prefixes, protocol, reward, scenes, splits, styles, transcripts

TRAIN_MAX_TURNS, EVAL_MAX_TURNS = protocol.TRAIN_MAX_TURNS, protocol.EVAL_MAX_TURNS
REVISION_OPENING = "<think>"  # a wrong-type prefix's next turn starts thinking again (VRRL_SPEC 3, forced opening)
EVAL_KEYS = ("splits", "examples_per_split")
SUCCESS_METRIC = "correct"
TURN_STOP_STRINGS = ()  # a turn ends at <|im_end|> only
# Feedback images are crops of the scene itself, so one rollout batch may mix scene styles: one render style name.
RENDER_STYLE = "scene"


def _section(value) -> dict:
  return value.to_dict() if hasattr(value, "to_dict") else dict(value)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """How many specs each split holds and how they are drawn (``splits.make_split``); ``crop_side`` None: the
  image's ``feedback.scaled_crop_side``."""

  train_size: int = 2000
  eval_size: int = 64  # per eval split
  train_seed: int = 0
  eval_seed: int = 1
  preset: str = "small"
  kinds: tuple[str, ...] = ("table", "bars", "hbars")
  crop_side: int | None = None

  def __post_init__(self):
    for name in ("train_size", "eval_size"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    if self.preset not in scenes.SIZE_PRESETS:
      raise ValueError(f"preset must be one of {sorted(scenes.SIZE_PRESETS)}, got {self.preset!r}")
    if not self.kinds:
      raise ValueError("kinds is empty")


@dataclasses.dataclass(frozen=True)
class Example:
  """One question: its spec, a stable id, the split and the render style of the rollout batch it joins."""

  map_id: str
  split: str
  spec: scenes.GroundingSpec
  style: str = RENDER_STYLE


# --- Data -----------------------------------------------------------------------------------------------------------


def data_config(config) -> DataConfig:
  fields = _section(config.data)
  if "kinds" in fields:
    fields["kinds"] = tuple(fields["kinds"])
  return DataConfig(**fields)


@functools.lru_cache(maxsize=16)
def _split(name: str, cfg: DataConfig) -> tuple[Example, ...]:
  n, seed = (cfg.train_size, cfg.train_seed) if name == "train" else (cfg.eval_size, cfg.eval_seed)
  specs = splits.make_split(name, n, seed, kinds=cfg.kinds, preset=cfg.preset)
  return tuple(Example(scenes.spec_hash(s)[:16], name, s) for s in specs)


def train_examples(config) -> list[Example]:
  return list(_split("train", data_config(config)))


def eval_examples(config) -> list[Example]:
  """``config.eval.examples_per_split`` questions of each split in ``config.eval.splits``."""
  cfg = data_config(config)
  per_split = int(config.eval.examples_per_split)
  return [e for name in config.eval.splits for e in _split(name, cfg)[:per_split]]


def check_eval_config(config) -> None:
  for name in tuple(config.eval.splits):
    if name not in splits.SPLITS or name == "train":
      raise ValueError(f"eval split {name!r}: choose from {[s for s in splits.SPLITS if s != 'train']}")
  value = config.eval.examples_per_split
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"examples_per_split must be a positive int, got {value!r}")


def parse_spec(spec) -> scenes.GroundingSpec:
  return scenes.parse_spec(spec)


def max_image_side(config) -> int:
  """The longer side of the preset's training sizes (crops are smaller)."""
  return max(max(size) for size in splits.default_sizes("train", data_config(config).preset))


# --- Episodes and reward --------------------------------------------------------------------------------------------


def episode_options(config) -> dict[str, Any]:
  """What reading model text needs, shared by the episodes, the reward, the buffer and the probe: the pointing
  format and the correctness rule (the reward's), and the crop side."""
  cfg = reward_config(config)
  return {
    "point_format": cfg.point_format,
    "correct_rule": cfg.correct_rule,
    "tolerance_px": cfg.tolerance_px,
    "crop_side": data_config(config).crop_side,
  }


def _reward_options(options: Mapping[str, Any]) -> reward.RewardConfig:
  return reward.RewardConfig(
    **{k: options[k] for k in ("point_format", "correct_rule", "tolerance_px") if k in options}
  )


def new_episode(spec, *, max_turns: int, style: str, **options) -> protocol.Episode:
  del style  # the crops inherit the scene's own style
  return protocol.Episode(
    spec,
    max_turns=max_turns,
    point_format=options.get("point_format", parse.DEFAULT_POINT_FORMAT),
    crop_side=options.get("crop_side"),
  )


def reward_config(config) -> reward.RewardConfig:
  return reward.RewardConfig.from_mapping(_section(config.rl.reward))


def score_batch(turns_batch, specs, reward_config, buffer_fields: Mapping | None = None) -> dict[str, np.ndarray]:
  return reward.score_batch(turns_batch, specs, reward_config, buffer_fields)


# --- SFT ------------------------------------------------------------------------------------------------------------


def transcript_config(config) -> transcripts.TranscriptConfig:
  options = _section(config.sft.transcripts)
  options_ = episode_options(config)
  shared = {k: options_[k] for k in ("point_format", "crop_side")}
  for name, value in shared.items():
    if options.setdefault(name, value) != value:
      raise ValueError(f"sft.transcripts.{name}={options[name]!r} differs from the episodes' {value!r}")
  return transcripts.TranscriptConfig.from_mapping(options)


def sft_messages(spec, rng: np.random.Generator, transcript_config, wrong_turn_loss: bool) -> list[dict]:
  return transcripts.to_messages(transcripts.make_transcript(spec, rng, transcript_config), wrong_turn_loss)


# --- Replay buffer and the grounding probe --------------------------------------------------------------------------


def prefix_verdict(
  spec, assistant_texts: Sequence[str], max_route_turns: int, **options
) -> tuple[str | None, str | None]:
  """A clean episode (well-formed pointing turns, then a well-formed answer) becomes a ``right`` or ``wrong`` prefix
  by its answer; anything else is skipped with the reason."""
  config = _reward_options(options)
  turns = [parse.parse_turn(text, config.point_format) for text in assistant_texts]
  if not turns:
    return None, "no_turns"
  if not (turns[-1].is_answer and turns[-1].well_formed):
    return None, "no_final"
  if not all(t.is_point and t.well_formed for t in turns[:-1]):
    return None, "unclean_prefix"
  n_points = len(turns) - 1
  if n_points < 1:
    return None, "no_route"
  if n_points > max_route_turns:
    return None, "too_many_routes"
  return prefixes.prefix_type(spec, assistant_texts, config), None


def random_init_turn(spec, rng: np.random.Generator, **options) -> str:
  """VRRL's ``random_init`` roll-in: an injected first look near the target, not on it (``prefixes``)."""
  return prefixes.random_init_turn(spec, rng, point_format=_reward_options(options).point_format)


def read_proposal(text: str, **options) -> tuple[int, int] | None:
  """A pointing turn's point; None for an answer or a turn without a valid point."""
  turn = parse.parse_turn(text, _reward_options(options).point_format)
  return turn.point if turn.is_point else None


def is_correct(spec, proposal, **options) -> bool:
  return reward.is_correct(tuple(proposal), scenes.scene_question(spec), _reward_options(options))


# --- Evaluation -----------------------------------------------------------------------------------------------------


def episode_record(example, trajectory) -> evaluate.EpisodeRecord:
  """The crops are counted from what the rollout showed (the run's eval turn budget may be below the protocol's)."""
  record = evaluate.episode_record(
    trajectory.spec, trajectory.turns, trajectory.finish_reason, max_turns=EVAL_MAX_TURNS, example_id=example.map_id
  )
  return dataclasses.replace(record, crops=sum(image is not None for image in trajectory.feedback_images))


def aggregate(records) -> dict:
  return evaluate.aggregate(records)


def headline(metrics: Mapping) -> dict[str, float]:
  out = {}
  for split in ("in_distribution", "out_of_distribution", "overall"):
    if split in metrics:
      out[f"{split}/accuracy"] = metrics[split]["accuracy"]
  out["overall/accuracy_turn1"] = metrics["overall"]["accuracy_turn1"]
  out["overall/crops_per_episode"] = metrics["overall"]["crops_per_episode"]
  out["overall/format_error_rate"] = metrics["overall"]["format_error_rate"]
  return out


EVAL_BAR_METRIC = "accuracy"


def eval_bars(metrics: Mapping) -> dict[str, float]:
  """Accuracy in and out of distribution, then per scene kind."""
  out = {
    name: metrics[key]["accuracy"]
    for name, key in (("ID", "in_distribution"), ("OOD", "out_of_distribution"))
    if key in metrics
  }
  out.update({kind: summary["accuracy"] for kind, summary in metrics.get("by_kind", {}).items()})
  return out


def record_metrics(record: evaluate.EpisodeRecord) -> dict[str, Any]:
  return {"correct": float(record.correct), "crops": record.crops, "finish": record.finish_reason}


def group_of(spec) -> str:
  spec = scenes.parse_spec(spec)
  return f"{spec.kind}/{spec.style}{' (OOD)' if styles.get_style(spec.style).ood else ''}"


def gallery_image(spec, image, turns: Sequence[str], **options):
  """The scene with the target box (green) and every point of the episode (red, numbered by turn) drawn on it."""
  from PIL import Image, ImageDraw

  spec = scenes.parse_spec(spec)
  canvas = Image.fromarray(np.asarray(image)).convert("RGB") if not isinstance(image, Image.Image) else image.copy()
  draw = ImageDraw.Draw(canvas)
  draw.rectangle(scenes.scene_question(spec).box, outline=(0, 160, 0), width=2)
  point_format = _reward_options(options).point_format
  for turn_number, text in enumerate(turns, start=1):
    point = parse.parse_turn(text, point_format).point
    if point is not None:
      x, y = point
      draw.ellipse((x - 4, y - 4, x + 4, y + 4), outline=(220, 0, 0), width=2)
      draw.text((x + 6, y - 6), str(turn_number), fill=(220, 0, 0))
  return canvas


def describe(spec) -> str:
  spec = scenes.parse_spec(spec)
  question = scenes.scene_question(spec)
  return f"{question.text}\ntarget box {question.box}, point {question.point}; {spec.width} x {spec.height} px"
