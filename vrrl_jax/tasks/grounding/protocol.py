"""The multi-turn pointing protocol (GROUNDING_SPEC section 3): prompt text and one episode's state.

The first user turn is the scene image and ``task_prompt(...)`` (the question, the image size and the turn format).
Each assistant turn is ``<think>...</think>`` then one action (``parse``): a pointing call or
``<answer>(x, y)</answer>``. What the environment answers to a turn (``decide_step``), in this order:

1. no closed ``<think>...</think>`` block: the episode ends, ``"no_think"``;
2. an ``<answer>`` after ``</think>``: ends with ``"final"`` if its body is ``(x, y)`` with integers, else with
   ``"format_error"`` (an answer that is not a point is a malformed commit, not a request to look);
3. no pointing tag after ``</think>`` either: ends with ``"no_action"`` (GROUNDING_SPEC lists "neither a call nor an
   answer after ``</think>``" among VRRL's early stops, so it is a stop, not a notice);
4. pointing tag(s) but no valid coordinate in any of them: the text notice
   ``"No valid pointing extracted from assistant's response."`` (so a model that tried to point learns what went
   wrong), unless the turn budget is spent;
5. the counted point equals an earlier turn's counted point (the same integer coordinate, inside the image or not):
   ends with ``"repeated_point"`` (a repeated look shows nothing new);
6. the turn budget is spent (turn ``max_turns``): ends with ``"max_turns"``, no feedback is rendered;
7. a point outside the image: the text turn ``"x is out of image boundary."`` and/or
   ``"y is out of image boundary."`` (both: joined by one space); inside: the feedback image (``feedback``: the dot on
   the whole image, then the crop around it) as a user turn.

Feedback text with the crop: none by default. GROUNDING_SPEC says VRRL's user turn holds only the image; the image
alone is unambiguous here because the prompt says what follows a call, and it keeps conversations short (the tiny
model's budget is tokens). ``feedback_text`` adds a fixed text after the image for models that want one.

Pointing format: ``"tool_call"`` by default. It is the chat template's own tool-call shape (Qwen2.5-VL's
computer-use calls already write ``"coordinate": [x, y]`` in absolute pixels), generation can stop at
``</tool_call>``, and ViGoRL's multi-turn protocol (GROUNDING_SPEC section 2) uses the same shape, so the later task
shares the parser. VRRL's older ``<points x1 y1>`` format stays available (``point_format="points"``). Coordinates
are absolute pixels in both; Qwen3-VL's [0, 1000]-normalised convention is not implemented.
"""

from __future__ import annotations

import dataclasses
import numbers

from PIL import Image

from vrrl_jax.tasks.grounding import feedback, parse, scenes

FINAL = "final"
FORMAT_ERROR = "format_error"
MAX_TURNS = "max_turns"
NO_THINK = "no_think"
NO_ACTION = "no_action"
REPEATED_POINT = "repeated_point"
DONE_REASONS = (FINAL, FORMAT_ERROR, MAX_TURNS, NO_THINK, NO_ACTION, REPEATED_POINT)
TRAIN_MAX_TURNS = EVAL_MAX_TURNS = 8  # VRRL's budget: 8 turns (of 500 tokens each)

NO_POINT_TEXT = "No valid pointing extracted from assistant's response."
X_OUT_TEXT = "x is out of image boundary."
Y_OUT_TEXT = "y is out of image boundary."

CROP = "crop"
TEXT = "text"

TASK_PROMPT_TEMPLATE = (
  "{question}\n"
  "The image is a table or chart, {width} pixels wide and {height} pixels high. Coordinates are integer pixels "
  "(x, y): x counts from the left edge, y from the top edge.\n"
  "In every turn, first reason inside <think> and </think>. Then either point at a location to look at it closely:\n"
  "{call}\n"
  "and you will see a crop of the image around your point, with a red dot on it; "
  "or, once a crop confirms your location, give your final answer: <answer>(x, y)</answer>\n"
  "Point at least once before answering, and never point at the same coordinate twice."
)


def task_prompt(question: str, width: int, height: int, point_format: str = parse.DEFAULT_POINT_FORMAT) -> str:
  call = parse.format_call(0, 0, point_format).replace("[0, 0]", "[x, y]")
  call = call.replace('x1="0" y1="0"', 'x1="x" y1="y"')
  return TASK_PROMPT_TEMPLATE.format(question=question, width=width, height=height, call=call)


def out_of_image_text(x: int, y: int, width: int, height: int) -> str | None:
  """The boundary notice for a point, or None when it is inside the image."""
  parts = []
  if not 0 <= x < width:
    parts.append(X_OUT_TEXT)
  if not 0 <= y < height:
    parts.append(Y_OUT_TEXT)
  return " ".join(parts) or None


@dataclasses.dataclass(frozen=True)
class Decision:
  """What the environment does with one turn, before any pixel: end (with a reason) or give feedback
  (``feedback`` is ``"crop"`` for the feedback image, ``"text"`` for ``text``)."""

  done: bool
  reason: str | None = None
  feedback: str | None = None
  text: str | None = None


def decide_step(
  turn: parse.ParsedTurn,
  earlier_points: list[tuple[int, int]],
  turn_number: int,
  max_turns: int,
  size: tuple[int, int],
) -> Decision:
  """The rules of the module docstring. ``turn_number`` is 1-based; ``earlier_points`` are the counted points of
  the earlier turns."""
  if not turn.has_think:
    return Decision(True, NO_THINK)
  if turn.is_answer:
    return Decision(True, FINAL if turn.point is not None else FORMAT_ERROR)
  if not turn.is_point:
    return Decision(True, NO_ACTION)
  last = turn_number >= max_turns
  if turn.point is None:
    return Decision(True, MAX_TURNS) if last else Decision(False, None, TEXT, NO_POINT_TEXT)
  if turn.point in earlier_points:
    return Decision(True, REPEATED_POINT)
  if last:
    return Decision(True, MAX_TURNS)
  notice = out_of_image_text(*turn.point, *size)
  if notice is not None:
    return Decision(False, None, TEXT, notice)
  return Decision(False, None, CROP)


@dataclasses.dataclass(frozen=True)
class Step:
  """What the environment answers to one assistant turn: feedback (an image, a text, or both) or the end."""

  parsed: parse.ParsedTurn
  done: bool
  reason: str | None = None  # one of DONE_REASONS when done
  feedback_text: str | None = None
  feedback_image: Image.Image | None = None


def _positive_int(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}")
  return int(value)


class Episode:
  """One conversation about one scene. ``turns`` (assistant texts) is what ``reward.score_turns(turns, spec)``
  scores; ``images`` is the scene image followed by one feedback image per turn that got one; ``points`` holds
  each turn's counted point (None for turns without one)."""

  def __init__(
    self,
    spec,
    *,
    max_turns: int = TRAIN_MAX_TURNS,
    crop_side: int | None = None,
    point_format: str = parse.DEFAULT_POINT_FORMAT,
    feedback_text: str | None = None,
    dot_radius: int = feedback.DOT_RADIUS,
  ):
    self.spec = scenes.parse_spec(spec)
    self.max_turns = _positive_int("max_turns", max_turns)
    width, height = self.spec.size
    self.crop_side = feedback.scaled_crop_side(width, height) if crop_side is None else crop_side
    feedback.crop_box(width, height, 0, 0, self.crop_side)  # validates crop_side
    self.point_format = parse.check_point_format(point_format)
    if feedback_text is not None and not isinstance(feedback_text, str):
      raise ValueError(f"feedback_text must be a str or None, got {type(feedback_text).__name__}")
    self.feedback_text = feedback_text
    self.dot_radius = dot_radius
    self.question = scenes.scene_question(self.spec)
    image, self.elements = scenes.render_scene(self.spec)
    self.images: list[Image.Image] = [image]
    self.turns: list[str] = []
    self.parsed: list[parse.ParsedTurn] = []
    self.points: list[tuple[int, int] | None] = []
    self.done = False
    self.reason: str | None = None

  @property
  def image(self) -> Image.Image:
    return self.images[0]

  def prompt_text(self) -> str:
    return task_prompt(self.question.text, self.spec.width, self.spec.height, self.point_format)

  def first_prompt(self) -> tuple[str, Image.Image]:
    return self.prompt_text(), self.images[0]

  def step(self, assistant_text: str) -> Step:
    if self.done:
      raise RuntimeError(f"episode already ended ({self.reason}) after {len(self.turns)} turns")
    turn = parse.parse_turn(assistant_text, self.point_format)
    earlier = [p for p in self.points if p is not None]
    decision = decide_step(turn, earlier, len(self.turns) + 1, self.max_turns, self.spec.size)
    self.turns.append(turn.text)
    self.parsed.append(turn)
    self.points.append(turn.point)
    if decision.done:
      self.done, self.reason = True, decision.reason
      return Step(turn, True, decision.reason)
    if decision.feedback == TEXT:
      return Step(turn, False, None, decision.text)
    x, y = turn.point
    image = feedback.feedback_image(self.images[0], x, y, self.crop_side, self.dot_radius)
    self.images.append(image)
    return Step(turn, False, None, self.feedback_text, image)
