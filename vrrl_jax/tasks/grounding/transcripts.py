"""Scripted pointing transcripts for the SFT warm start of the grounding task.

For one spec, a transcript in the protocol that the reward scores at its maximum for its case (format gate passed,
a correct answer): ``correct_value - step_cost * n_wrong``. Two shapes:

- correct first: point at the target, then answer with that point;
- 1..``max_wrong_points`` wrong points, then a re-point at the target, then the answer.

A wrong point is the centre of another element of the same type (another table cell; another bar), a neighbour
(one row or column away; the next bar) with chance ``p_neighbour``; on a bar it is moved along the bar towards the
bar's label when that brings the label into the crop, so the crop shows the name the next ``<think>`` reads. The
``<think>`` after a wrong point says what the dot is on (that element, with its value for a table cell), true by
construction, and, when the next point is the target, where the target is from there (rows/columns, or bars to
the left/right/up/down); when the next point is another wrong one it only says it will look elsewhere. The first
turn's ``<think>`` restates what the question asks for; the answer's says the dot is on the element asked for.
The target point is the question's point (the box centre), pointed at and answered.

Every transcript is played through ``protocol.Episode`` while it is built (so the feedback images are the ones
the environment shows); one that does not end with reason ``"final"`` is a bug and raises.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Iterable, Mapping

import numpy as np
from PIL import Image

from vrrl_jax.tasks.grounding import content, feedback, parse, protocol, scenes


@dataclasses.dataclass(frozen=True)
class TranscriptConfig:
  """``p_correct_first``: chance the first point is on the target. Otherwise there is one wrong point, and each
  further one (up to ``max_wrong_points``) follows with chance ``p_another_wrong``. ``p_neighbour``: chance a wrong
  point is on a neighbour of the previous element (the target for the first). ``max_turns``: the episode budget the
  transcript must fit (``max_wrong_points + 2`` turns at most). ``crop_side``: None for the image's
  ``feedback.scaled_crop_side``."""

  p_correct_first: float = 0.3
  p_another_wrong: float = 0.3
  max_wrong_points: int = 2
  p_neighbour: float = 0.7
  max_turns: int = protocol.TRAIN_MAX_TURNS
  point_format: str = parse.DEFAULT_POINT_FORMAT
  crop_side: int | None = None

  def __post_init__(self):
    for name in ("p_correct_first", "p_another_wrong", "p_neighbour"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    for name, lo in (("max_wrong_points", 1), ("max_turns", 2)):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    if self.max_wrong_points + 2 > self.max_turns:
      raise ValueError(
        f"max_wrong_points={self.max_wrong_points} needs {self.max_wrong_points + 2} turns "
        f"(wrong points + the target + the answer), more than max_turns={self.max_turns}"
      )
    parse.check_point_format(self.point_format)
    if self.crop_side is not None:
      feedback.crop_box(1, 1, 0, 0, self.crop_side)  # validates: an even int >= 2

  @classmethod
  def from_mapping(cls, options: Mapping[str, Any]) -> "TranscriptConfig":
    """From a plain mapping or ``ml_collections.ConfigDict``; unknown keys raise ValueError."""
    options = {k: options[k] for k in options.keys()}
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"unknown transcript option(s) {unknown}")
    return cls(**options)


@dataclasses.dataclass(frozen=True)
class Transcript:
  """One scripted episode. ``points[i]`` is turn i's point (the answer's for the last turn);
  ``feedback_images[i]`` is what the environment shows after pointing turn i (every turn but the answer).
  The wrong points are assistant turns ``0 .. n_wrong - 1``."""

  spec: scenes.GroundingSpec
  question: scenes.Question
  prompt: str
  turns: tuple[str, ...]
  points: tuple[tuple[int, int], ...]
  wrong_elements: tuple[str, ...]
  image: Image.Image
  feedback_images: tuple[Image.Image, ...]
  feedback_texts: tuple[str | None, ...]

  @property
  def n_wrong(self) -> int:
    return len(self.wrong_elements)


# ----------------------------------------------------------------------------------------------------------------
# Elements: where they are in the grid or row of bars, what the dot on them shows, where the target is from them.


def _grid_position(data: content.SceneData, name: str) -> tuple[int, int]:
  """(row, column) of a table cell, or (0, bar index) of a bar, from its element name."""
  if data.kind == content.TABLE:
    _, row, column = name.split(":", 2)
    return data.labels.index(row), data.columns.index(column)
  return 0, data.labels.index(name.split(":", 1)[1])


def describe_element(spec, name: str) -> str:
  """What the dot on element ``name`` is on, e.g. "the cell holding 383 (row 'Q1', column 'Sales')"."""
  data = scenes.scene_data(spec)
  r, c = _grid_position(data, name)
  if data.kind == content.TABLE:
    return f"the cell holding {data.values[r][c]} (row '{data.labels[r]}', column '{data.columns[c]}')"
  return f"the bar labelled '{data.labels[c]}'"


def _count(n: int, unit: str) -> str:
  return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def direction(spec, from_name: str, to_name: str) -> str:
  """Where ``to_name`` is from ``from_name``: "1 row down and 2 columns left", "3 bars to the right"."""
  data = scenes.scene_data(spec)
  (r0, c0), (r1, c1) = _grid_position(data, from_name), _grid_position(data, to_name)
  if data.kind == content.TABLE:
    parts = []
    if r1 != r0:
      parts.append(f"{_count(abs(r1 - r0), 'row')} {'down' if r1 > r0 else 'up'}")
    if c1 != c0:
      parts.append(f"{_count(abs(c1 - c0), 'column')} {'right' if c1 > c0 else 'left'}")
    return " and ".join(parts) if parts else "here"
  if c1 == c0:
    return "here"
  if data.kind == content.BARS:
    return f"{_count(abs(c1 - c0), 'bar')} to the {'right' if c1 > c0 else 'left'}"
  return f"{_count(abs(c1 - c0), 'bar')} {'down' if c1 > c0 else 'up'}"


def plan_text(question: scenes.Question) -> str:
  """The first turn's reasoning: what the question asks for (its text without "Point to")."""
  wanted = question.text.removeprefix("Point to ").rstrip(".")
  return f"I need {wanted}. I will point at it."


def _neighbours(data: content.SceneData, name: str) -> list[str]:
  r, c = _grid_position(data, name)
  if data.kind == content.TABLE:
    cells = [(r + dr, c + dc) for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))]
    return [
      content.table_cell(data.labels[i], data.columns[j])
      for i, j in cells
      if 0 <= i < len(data.labels) and 0 <= j < len(data.columns)
    ]
  return [content.bar_name(data.labels[j]) for j in (c - 1, c + 1) if 0 <= j < len(data.labels)]


def _all_elements(data: content.SceneData) -> list[str]:
  if data.kind == content.TABLE:
    return [content.table_cell(r, c) for r in data.labels for c in data.columns]
  return [content.bar_name(label) for label in data.labels]


def wrong_point(spec, name: str, crop_side: int) -> tuple[int, int]:
  """The point used for a wrong look at element ``name``: its centre, or on a bar the point closest to the centre
  whose crop also shows the bar's label (when one exists)."""
  spec = scenes.parse_spec(spec)
  boxes = scenes.elements(spec)
  box = boxes[name]
  x, y = scenes.box_center(box)
  if spec.kind == content.TABLE:
    return x, y
  label = boxes["label:" + name.split(":", 1)[1]]
  half = crop_side // 2
  if spec.kind == content.BARS:  # label below the bar: move down until the crop reaches it
    y = min(max(y, label[3] - half + 1), box[3])
  else:  # label left of the bar: move left until the crop reaches it
    x = max(min(x, label[0] + half - 1), box[0])
  left, top, right, bottom = feedback.crop_box(spec.width, spec.height, x, y, crop_side)
  if left <= label[0] and top <= label[1] and label[2] < right and label[3] < bottom:
    return x, y
  return scenes.box_center(box)


# ----------------------------------------------------------------------------------------------------------------
# Transcripts.


def _draw_wrong_elements(data, target: str, rng: np.random.Generator, config: TranscriptConfig) -> list[str]:
  if rng.random() < config.p_correct_first:
    return []
  n_wrong = 1
  while n_wrong < config.max_wrong_points and rng.random() < config.p_another_wrong:
    n_wrong += 1
  chosen: list[str] = []
  previous = target
  for _ in range(n_wrong):
    taken = set(chosen) | {target}
    near = [e for e in _neighbours(data, previous) if e not in taken]
    pool = near if near and rng.random() < config.p_neighbour else [e for e in _all_elements(data) if e not in taken]
    if not pool:
      break
    previous = pool[int(rng.integers(len(pool)))]
    chosen.append(previous)
  return chosen


def make_transcript(
  spec, rng: np.random.Generator, config: TranscriptConfig | None = None, *, wrong_elements: Iterable[str] | None = None
) -> Transcript:
  """One transcript for ``spec``; its shape is drawn from ``config`` unless ``wrong_elements`` fixes it (``()``
  for correct-first, else the element names of the wrong points, in order)."""
  if not isinstance(rng, np.random.Generator):
    raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
  config = TranscriptConfig() if config is None else config
  if not isinstance(config, TranscriptConfig):
    raise ValueError(f"config must be a TranscriptConfig, got {type(config).__name__}")
  spec = scenes.parse_spec(spec)
  question = scenes.scene_question(spec)
  data = scenes.scene_data(spec)
  if wrong_elements is None:
    wrong = _draw_wrong_elements(data, question.target, rng, config)
  else:
    wrong = [str(e) for e in wrong_elements]
    valid = set(_all_elements(data)) - {question.target}
    for name in wrong:
      if name not in valid:
        raise ValueError(f"wrong element {name!r} is not another element of this scene; choose from {sorted(valid)}")
    if len(set(wrong)) != len(wrong):
      raise ValueError(f"wrong elements repeat: {wrong}")
    if len(wrong) + 2 > config.max_turns:
      raise ValueError(f"{len(wrong)} wrong points need {len(wrong) + 2} turns, more than max_turns={config.max_turns}")
  crop_side = feedback.scaled_crop_side(*spec.size) if config.crop_side is None else config.crop_side
  points = [wrong_point(spec, name, crop_side) for name in wrong] + [question.point]
  looked_at = [*wrong, question.target]

  fmt = config.point_format
  texts = [parse.format_turn(plan_text(question), parse.format_call(*points[0], fmt))]
  for i, name in enumerate(wrong):
    seen = f"The dot is on {describe_element(spec, name)}, not the one asked for."
    if looked_at[i + 1] == question.target:
      unit = "cell" if data.kind == content.TABLE else "bar"
      think = f"{seen} The right {unit} is {direction(spec, name, question.target)}."
    else:
      think = f"{seen} I will look elsewhere."
    texts.append(parse.format_turn(think, parse.format_call(*points[i + 1], fmt)))
  final_think = f"The dot is on {describe_element(spec, question.target)}, which is what the question asks for."
  texts.append(parse.format_turn(final_think, parse.format_answer(*question.point)))

  episode = protocol.Episode(spec, max_turns=config.max_turns, crop_side=crop_side, point_format=fmt)
  images, notes = [], []
  for text in texts:
    step = episode.step(text)
    if step.feedback_image is not None:
      images.append(step.feedback_image)
      notes.append(step.feedback_text)
  if episode.reason != protocol.FINAL or len(episode.turns) != len(texts) or len(images) != len(texts) - 1:
    raise AssertionError(
      f"scripted transcript ended with {episode.reason!r} after {len(episode.turns)} of {len(texts)} turns: {texts}"
    )
  return Transcript(
    spec,
    question,
    episode.prompt_text(),
    tuple(texts),
    tuple(points) + (question.point,),
    tuple(wrong),
    episode.image,
    tuple(images),
    tuple(notes),
  )


def make_transcripts(specs: Iterable, seed: int, config: TranscriptConfig | None = None) -> list[Transcript]:
  """One transcript per spec, from one seeded stream (same seed and specs -> same transcripts)."""
  rng = np.random.default_rng(seed)
  return [make_transcript(spec, rng, config) for spec in specs]


def to_messages(transcript: Transcript, wrong_turn_loss: bool = True) -> list[dict[str, Any]]:
  """The training conversation (HF message format, images inline), as FrozenLake's ``to_messages``: the scene
  image and the task prompt in the first user turn; then each assistant turn, each but the last followed by a user
  turn with its feedback image (and its feedback text, when the episode has one).

  Per-turn loss: FrozenLake's messages carry no loss marker (the trainer masks wrong turns by ``turn_index``,
  assistant turns ``0 .. n_wrong - 1``, which holds here too). With ``wrong_turn_loss=False`` the wrong pointing
  turns additionally carry ``"loss": False`` (a key ``data.conversation.encode_conversation`` ignores), so a
  consumer can read the mask off the messages themselves.
  """
  messages = [
    {
      "role": "user",
      "content": [{"type": "image", "image": transcript.image}, {"type": "text", "text": transcript.prompt}],
    }
  ]
  for i, text in enumerate(transcript.turns):
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if not wrong_turn_loss and i < transcript.n_wrong:
      message["loss"] = False
    messages.append(message)
    if i < len(transcript.feedback_images):
      content_ = [{"type": "image", "image": transcript.feedback_images[i]}]
      if transcript.feedback_texts[i] is not None:
        content_.append({"type": "text", "text": transcript.feedback_texts[i]})
      messages.append({"role": "user", "content": content_})
  return messages
