"""SFT transcripts for the ViGoRL tasks, linearised the way ViGoRL linearises its search trees (GROUNDING_SPEC
section 2): a correct trace, or a wrong trace + ``"Wait, this seems off. Let's try something else."`` + a correct
trace. ViGoRL's trees come from a teacher VLM's Monte Carlo search over thoughts; here the teacher is the scene
generator, which knows where everything is, so the traces are true by construction:

- a wrong trace looks at a distractor (its centre): "The target could be near (x, y)." and, after the look, "The crop
  shows <the distractor>, not the target." followed by the wait phrase;
- the correct trace looks at the target (its centre in view pixels): "... it could be near (x, y).", then "The crop
  shows <the target>." and the answer (the point, or the word).

Multi-turn: each look is a ``search_coordinate`` tool call and its crop observation, played through
``protocol.Episode`` while the transcript is built (so the images and any forced answer are the environment's);
a forced answer's pre-filled text carries no loss (``"prefill"``). Grounded thinking: the same steps in one
``<think>``, each citing its point, then the answer.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Mapping

import numpy as np

from vrrl_jax.data import conversation
from vrrl_jax.tasks.vigorl import protocol as protocol_lib
from vrrl_jax.tasks.vigorl import spec as spec_lib
from vrrl_jax.tasks.vigorl.scene import POINT


@dataclasses.dataclass(frozen=True)
class TranscriptConfig:
  """``p_wrong_first``: chance of a wrong trace before the correct one; each further wrong trace (up to
  ``max_wrong``) follows with chance ``p_another_wrong``. The crop settings are the episodes'."""

  p_wrong_first: float = 0.5
  p_another_wrong: float = 0.2
  max_wrong: int = 2
  protocol: str = protocol_lib.MULTI_TURN
  offset: int = 42
  crop_size: int = 252
  dot: bool = False
  multiple: int = 28
  max_turns: int = protocol_lib.MAX_TURNS
  max_images: int = protocol_lib.MAX_IMAGES

  def __post_init__(self):
    for name in ("p_wrong_first", "p_another_wrong"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    if isinstance(self.max_wrong, bool) or not isinstance(self.max_wrong, numbers.Integral) or self.max_wrong < 0:
      raise ValueError(f"max_wrong must be an int >= 0, got {self.max_wrong!r}")
    if self.protocol == protocol_lib.MULTI_TURN and self.max_wrong + 2 > min(self.max_turns, self.max_images):
      raise ValueError(
        f"max_wrong={self.max_wrong}: wrong looks + the right look need {self.max_wrong + 1} crops and one more turn "
        f"to answer; max_turns={self.max_turns}, max_images={self.max_images} allow fewer"
      )

  @classmethod
  def from_mapping(cls, options: Mapping[str, Any]) -> "TranscriptConfig":
    options = {k: options[k] for k in options.keys()}
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"unknown transcript option(s) {unknown}")
    return cls(**options)

  @property
  def crop(self) -> protocol_lib.CropSettings:
    return protocol_lib.CropSettings(self.offset, self.crop_size, self.dot, self.multiple)


def _answer_text(spec, point: tuple[int, int]) -> str:
  scene = spec_lib.scene_of(spec)
  body = "({}, {})".format(*point) if scene.answer_type == POINT else scene.answer
  return f"<answer>{body}</answer>"


def plan_looks(spec, rng: np.random.Generator, config: TranscriptConfig) -> list[tuple[tuple[int, int], str]]:
  """The looks of one transcript: (view point, what the crop shows), wrong ones first, the target last."""
  spec = spec_lib.parse_spec(spec)
  scene = spec_lib.scene_of(spec)
  n_wrong = 0
  if config.max_wrong and scene.elements and rng.random() < config.p_wrong_first:
    n_wrong = 1
    while n_wrong < config.max_wrong and rng.random() < config.p_another_wrong:
      n_wrong += 1
  target = spec_lib.view_point(spec, scene.target.box)
  picks = rng.permutation(len(scene.elements))
  looks = []
  for index in picks:
    element = scene.elements[int(index)]
    point = spec_lib.view_point(spec, element.box)
    if len(looks) == n_wrong:
      break
    if point != target and point not in [p for p, _ in looks]:
      looks.append((point, element.description))
  return looks + [(target, scene.target.description)]


def make_messages(spec, rng: np.random.Generator, config: TranscriptConfig, wrong_turn_loss: bool = True) -> list[dict]:
  """The chat messages of one transcript. ``wrong_turn_loss`` False: the turns that look at a distractor stay in
  the context without loss."""
  spec = spec_lib.parse_spec(spec)
  looks = plan_looks(spec, rng, config)
  episode = protocol_lib.Episode(
    spec, protocol=config.protocol, crop=config.crop, max_turns=config.max_turns, max_images=config.max_images
  )
  prompt, image = episode.first_prompt()
  messages = [conversation.user_message(image, prompt)]
  target_point = looks[-1][0]
  if config.protocol == protocol_lib.GROUNDED_THINKING:
    steps = []
    for i, (point, seen) in enumerate(looks):
      wrong = i < len(looks) - 1
      steps.append(
        f"The target could be near ({point[0]}, {point[1]}): {seen} is there"
        + (f", not the target. {protocol_lib.WAIT}" if wrong else ".")
      )
    text = f"<think> {' '.join(steps)} </think>\n{_answer_text(spec, target_point)}"
    step = episode.step(text)
    if step.reason != protocol_lib.FINAL:
      raise AssertionError(f"a grounded-thinking transcript ended with {step.reason!r}: {text!r}")
    return messages + [{"role": "assistant", "content": text}]

  opening, said = "", ""
  for i, look in enumerate(looks + [None]):
    point, seen = look if look is not None else (None, None)
    if point is None:  # the answer turn
      body = f"<think> {said} </think>\n{_answer_text(spec, target_point)}"
      text = body if not opening else opening + body.split("<answer>", 1)[1]
    else:
      body = f"<think> {said + ' ' if said else ''}The target could be near ({point[0]}, {point[1]}). </think>\n"
      text = opening + body + protocol_lib.format_call(*point)
      if opening:
        raise AssertionError("a forced answer before the last look: the transcript does not fit the budget")
    step = episode.step(text)
    looks_at_distractor = point is not None and i < len(looks) - 1
    message = {"role": "assistant", "content": text, "loss": wrong_turn_loss or not looks_at_distractor}
    if opening:
      message["prefill"] = opening
    messages.append(message)
    if step.done:
      if point is not None or step.reason != protocol_lib.FINAL:
        raise AssertionError(f"a multi-turn transcript ended with {step.reason!r} at turn {i + 1}")
      return messages
    messages.append(conversation.user_message(step.feedback_image, step.feedback_text))
    opening = step.next_opening or ""
    said = f"The crop shows {seen}" + (f", not the target. {protocol_lib.WAIT}" if looks_at_distractor else ".")
  raise AssertionError("unreachable: the answer turn ends the episode")
