"""ViGoRL (Sarch et al., "Grounded Reinforcement Learning for Visual Reasoning"): reasoning anchored to (x, y) and
multi-turn zoom-in, on synthetic visual search and GUI grounding (GROUNDING_SPEC sections 2 and 4): the task
surface the run is handed (``vrrl_jax.tasks.Task``).

Modules, one idea each: ``scene`` (what a generator returns), ``search`` and ``gui`` (the two generators), ``spec``
(one example and its ground truth in view pixels), ``splits`` (train / eval, disjoint), ``crop`` (ViGoRL's zoom
crop), ``protocol`` (prompts, turns, the episode), ``reward`` (ViGoRL's scorers, ``vrrl_jax.rewards.vigorl``),
``transcripts`` (search-tree style SFT data), ``evaluate``.

Config sections this task reads: ``data`` (``DataConfig``: scene kind, size preset, questions, split sizes, the
protocol and its crop settings), ``image`` (the view size: the processor's resize), ``sft.transcripts``
(``transcripts.TranscriptConfig``, less what ``data`` fixes), ``rl.reward`` (must be empty: ViGoRL's scorers have no
knobs), ``eval.splits`` and ``eval.examples_per_split``.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from typing import Any, Mapping, Sequence

import numpy as np

from vrrl_jax import experiment
from vrrl_jax.tasks.grounding import coords
from vrrl_jax.tasks.vigorl import evaluate, reward, splits, transcripts
from vrrl_jax.tasks.vigorl import protocol as protocol_lib
from vrrl_jax.tasks.vigorl import spec as spec_lib
from vrrl_jax.tasks.vigorl.scene import POINT

TRAIN_MAX_TURNS = EVAL_MAX_TURNS = protocol_lib.MAX_TURNS
REVISION_OPENING = "<think>"
EVAL_KEYS = ("splits", "examples_per_split")
SUCCESS_METRIC = "accuracy"
TURN_STOP_STRINGS = protocol_lib.TURN_STOP_STRINGS
RENDER_STYLE = "scene"  # crops are cut from the scene itself: one render style name for every example


def _section(value) -> dict:
  return value.to_dict() if hasattr(value, "to_dict") else dict(value)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The scenes (``kind``, ``preset``, ``questions``, split sizes and seeds) and the protocol with ViGoRL's crop
  settings (``offset`` in view pixels, ``crop_size``, ``dot``, ``max_images``). ``view_factor``, ``min_pixels`` and
  ``max_pixels`` are the processor's (filled in from ``config.image``)."""

  kind: str = "search"
  preset: str = "small"
  questions: tuple[str, ...] = ()
  train_size: int = 2000
  eval_size: int = 64
  train_seed: int = 0
  eval_seed: int = 1
  protocol: str = protocol_lib.MULTI_TURN
  offset: int = 42
  crop_size: int = 252
  dot: bool = False
  max_images: int = protocol_lib.MAX_IMAGES

  def __post_init__(self):
    module = spec_lib.generator(self.kind)
    if self.preset not in module.SIZES:
      raise ValueError(f"preset must be one of {sorted(module.SIZES)}, got {self.preset!r}")
    questions = tuple(self.questions) or module.QUESTIONS
    if any(q not in module.QUESTIONS for q in questions):
      raise ValueError(f"questions {questions!r}: choose from {module.QUESTIONS}")
    object.__setattr__(self, "questions", questions)
    for name, low in (("train_size", 1), ("eval_size", 1), ("train_seed", 0), ("eval_seed", 0), ("offset", 1)):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    for name, low in (("crop_size", 1), ("max_images", 2)):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if self.protocol not in protocol_lib.PROTOCOLS:
      raise ValueError(f"protocol must be one of {protocol_lib.PROTOCOLS}, got {self.protocol!r}")
    if not isinstance(self.dot, bool):
      raise ValueError(f"dot must be a bool, got {self.dot!r}")


@dataclasses.dataclass(frozen=True)
class Example:
  """One question; ``protocol`` and ``dot`` (the run's) say how its episodes are scored."""

  map_id: str
  split: str
  spec: spec_lib.VigorlSpec
  protocol: str = protocol_lib.MULTI_TURN
  dot: bool = False
  style: str = RENDER_STYLE


def data_config(config) -> DataConfig:
  fields = _section(config.data)
  if "questions" in fields:
    fields["questions"] = tuple(fields["questions"])
  return DataConfig(**fields)


def _image_config(config):
  return experiment.image_config_from(config)


@functools.lru_cache(maxsize=16)
def _split(name: str, cfg: DataConfig, image_config) -> tuple[Example, ...]:
  n, seed = (cfg.train_size, cfg.train_seed) if name == "train" else (cfg.eval_size, cfg.eval_seed)
  specs = splits.make_split(
    name, n, seed, kind=cfg.kind, preset=cfg.preset, questions=cfg.questions, image_config=image_config
  )
  return tuple(Example(s.question_id[:16], name, s, cfg.protocol, cfg.dot) for s in specs)


def train_examples(config) -> list[Example]:
  return list(_split("train", data_config(config), _image_config(config)))


def eval_examples(config) -> list[Example]:
  cfg, per_split = data_config(config), int(config.eval.examples_per_split)
  return [e for name in config.eval.splits for e in _split(name, cfg, _image_config(config))[:per_split]]


def check_eval_config(config) -> None:
  for name in tuple(config.eval.splits):
    if name not in splits.SPLITS or name == "train":
      raise ValueError(f"eval split {name!r}: choose from {[s for s in splits.SPLITS if s != 'train']}")
  value = config.eval.examples_per_split
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"examples_per_split must be a positive int, got {value!r}")
  if value > data_config(config).eval_size:
    raise ValueError(f"examples_per_split={value} exceeds data.eval_size={data_config(config).eval_size}")


def parse_spec(spec) -> spec_lib.VigorlSpec:
  return spec_lib.parse_spec(spec)


def max_image_side(config) -> int:
  """The longest side the model sees: the question's image after the processor's resize, or a crop."""
  cfg, image_config = data_config(config), _image_config(config)

  views = [coords.processed_size(w, h, image_config) for w, h in splits.sizes(cfg.kind, "train", cfg.preset)]
  side = max(max(v) for v in views)
  return max(side, max(coords.processed_size(cfg.crop_size, cfg.crop_size, image_config)))


# --- Episodes and reward --------------------------------------------------------------------------------------------


def episode_options(config) -> dict[str, Any]:
  """The protocol and its crop settings: what the episodes, the reward and the transcripts share."""
  cfg = data_config(config)
  return {
    "protocol": cfg.protocol,
    "offset": cfg.offset,
    "crop_size": cfg.crop_size,
    "dot": cfg.dot,
    "max_images": cfg.max_images,
    "multiple": _image_config(config).factor,
  }


def _crop(options: Mapping[str, Any]) -> protocol_lib.CropSettings:
  return protocol_lib.CropSettings(options["offset"], options["crop_size"], options["dot"], options["multiple"])


def new_episode(spec, *, max_turns: int, style: str, **options) -> protocol_lib.Episode:
  del style  # crops inherit the scene's own style
  return protocol_lib.Episode(
    spec, protocol=options["protocol"], crop=_crop(options), max_turns=max_turns, max_images=options["max_images"]
  )


def reward_config(config) -> reward.RewardConfig:
  extra = _section(config.rl.reward)
  if extra:
    raise ValueError(f"ViGoRL's scorers take no options; config.rl.reward must be empty, got {sorted(extra)}")
  cfg = data_config(config)
  return reward.RewardConfig(protocol=cfg.protocol, dot=cfg.dot)


def score_batch(turns_batch, specs, reward_config, buffer_fields: Mapping | None = None) -> dict[str, np.ndarray]:
  return reward.score_batch(turns_batch, specs, reward_config, buffer_fields)


# --- SFT ------------------------------------------------------------------------------------------------------------


def transcript_config(config) -> transcripts.TranscriptConfig:
  options = _section(config.sft.transcripts)
  shared = episode_options(config)
  shared["max_turns"] = int(config.rl.max_turns)
  for name, value in shared.items():
    if options.setdefault(name, value) != value:
      raise ValueError(f"sft.transcripts.{name}={options[name]!r} differs from the episodes' {value!r}")
  return transcripts.TranscriptConfig.from_mapping(options)


def sft_messages(spec, rng: np.random.Generator, transcript_config, wrong_turn_loss: bool) -> list[dict]:
  return transcripts.make_messages(spec, rng, transcript_config, wrong_turn_loss)


# --- Replay buffer and the grounding probe --------------------------------------------------------------------------


def prefix_verdict(
  spec, assistant_texts: Sequence[str], max_route_turns: int, **options
) -> tuple[str | None, str | None]:
  """A multi-turn episode of valid looks then an answer becomes a ``right`` or ``wrong`` prefix by its accuracy."""
  if options.get("protocol", protocol_lib.MULTI_TURN) != protocol_lib.MULTI_TURN:
    return None, "single_turn"
  turns = [protocol_lib.read_turn(text) for text in assistant_texts]
  if not turns:
    return None, "no_turns"
  if turns[-1].action != "answer":
    return None, "no_final"
  if not all(t.action == "call" and t.point is not None for t in turns[:-1]):
    return None, "unclean_prefix"
  if len(turns) < 2:
    return None, "no_route"
  if len(turns) - 1 > max_route_turns:
    return None, "too_many_routes"
  config = reward.RewardConfig(protocol=protocol_lib.MULTI_TURN, dot=bool(options.get("dot", False)))
  right = reward.score_turns(list(assistant_texts), spec, config)["accuracy"] == 1.0
  return ("right" if right else "wrong"), None


def read_proposal(text: str, **options) -> tuple[int, int] | None:
  """A look's coordinate (multi-turn tool call; grounded thinking: the first cited point)."""
  if options.get("protocol", protocol_lib.MULTI_TURN) == protocol_lib.GROUNDED_THINKING:
    points = protocol_lib.cited_points(text)
    return points[0] if points else None
  return protocol_lib.read_turn(text).point


def is_correct(spec, proposal, **options) -> bool:
  """A look is right when it lands in the target's box (view pixels)."""
  x1, y1, x2, y2 = spec_lib.view_box(spec)
  x, y = proposal
  return x1 <= x <= x2 and y1 <= y <= y2


# --- Evaluation -----------------------------------------------------------------------------------------------------


def episode_record(example, trajectory) -> evaluate.EpisodeRecord:
  return evaluate.episode_record(
    trajectory.spec,
    trajectory.turns,
    trajectory.finish_reason,
    crops=sum(image is not None for image in trajectory.feedback_images),
    config=reward.RewardConfig(protocol=example.protocol, dot=example.dot),
    example_id=example.map_id,
  )


def aggregate(records) -> dict:
  return evaluate.aggregate(records)


def headline(metrics: Mapping) -> dict[str, float]:
  out = {}
  for split in ("in_distribution", "out_of_distribution", "overall"):
    if split in metrics:
      out[f"{split}/accuracy"] = metrics[split]["accuracy"]
  for key in ("crops_per_episode", "unique_coordinates_per_episode", "format_error_rate"):
    out[f"overall/{key}"] = metrics["overall"][key]
  return out


EVAL_BAR_METRIC = "accuracy"


def eval_bars(metrics: Mapping) -> dict[str, float]:
  out = {
    name: metrics[key]["accuracy"]
    for name, key in (("ID", "in_distribution"), ("OOD", "out_of_distribution"))
    if key in metrics
  }
  out.update({q: summary["accuracy"] for q, summary in metrics.get("by_question", {}).items()})
  return out


def record_metrics(record: evaluate.EpisodeRecord) -> dict[str, Any]:
  return {
    "correct": float(record.correct),
    "crops": record.crops,
    "unique_coordinates": record.unique_coordinates,
    "finish": record.finish_reason,
  }


def group_of(spec) -> str:
  spec = spec_lib.parse_spec(spec)
  return f"{spec.kind}/{spec.question}/{spec.style}{' (OOD)' if spec.is_ood else ''}"


def gallery_image(spec, image, turns: Sequence[str], **options):
  """The question's image at view size with the target box (green) and every look (red, numbered by turn)."""
  from PIL import Image, ImageDraw

  spec = spec_lib.parse_spec(spec)
  canvas = Image.fromarray(np.asarray(image)).convert("RGB") if not isinstance(image, Image.Image) else image.copy()
  canvas = canvas.resize(spec.view_size, Image.Resampling.BICUBIC)
  draw = ImageDraw.Draw(canvas)
  draw.rectangle(spec_lib.view_box(spec), outline=(0, 160, 0), width=2)
  name = options.get("protocol", protocol_lib.MULTI_TURN)
  for turn_number, text in enumerate(turns, start=1):
    points = (
      protocol_lib.cited_points(text)
      if name == protocol_lib.GROUNDED_THINKING
      else [protocol_lib.read_turn(text).point]
    )
    for x, y in [p for p in points if p is not None]:
      draw.ellipse((x - 4, y - 4, x + 4, y + 4), outline=(220, 0, 0), width=2)
      draw.text((x + 6, y - 6), str(turn_number), fill=(220, 0, 0))
  return canvas


def describe(spec) -> str:
  spec = spec_lib.parse_spec(spec)
  scene = spec_lib.scene_of(spec)
  answer = f"box {spec_lib.view_box(spec)}" if scene.answer_type == POINT else f"answer {scene.answer!r}"
  return (
    f"{scene.question}\n{answer}; target {scene.target.description} at {spec_lib.view_box(spec)}; "
    f"{spec.width} x {spec.height} px seen at {spec.view_width} x {spec.view_height}"
  )
