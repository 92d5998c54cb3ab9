"""ViGoRL's two protocols (GROUNDING_SPEC section 2): prompts, reading one turn, and the episode.

``"multi_turn"`` (zoom-in). Each assistant turn is ``<think>...</think>`` and then either a tool call
``<tool_call>{"name": "search_coordinate", "arguments": {"coordinate": [x, y]}}</tool_call>`` or
``<answer>...</answer>``. Upstream stops a turn's generation at ``</tool_call>`` or ``</answer>``; here the first of
the two in the turn decides what it is (anything the model wrote after it stays in the text, and the format
score sees it). What the environment answers, in this order:

1. an answer (``</answer>`` before any ``</tool_call>``): the episode ends, ``"final"``;
2. no tool call either: ends, ``"no_action"`` (upstream: a turn with neither ends the episode);
3. a tool call whose JSON does not parse, or whose ``arguments.coordinate`` is not two ints: ends, ``"bad_call"``
   (upstream gives no observation and lets the model go on; GROUNDING_SPEC allows ending, and a broken call
   teaches nothing more by continuing);
4. the generation-round budget is spent (turn ``max_turns``): ends, ``"max_turns"``, no crop;
5. otherwise the observation user turn, exactly ``OBSERVATION_DOT`` (or ``OBSERVATION`` without the dot) with the
   crop at ``<image>``; when that crop is the last image allowed (``max_images``, the question's image counted),
   the next assistant turn is pre-filled with ``FORCED_ANSWER`` so that the model must answer. The same happens
   when the next turn is the last round (``max_turns``): with upstream's 5 and 5 the two coincide; with a smaller
   eval budget the model still gets to answer instead of being cut off after a look.

``"grounded_thinking"`` (single turn): one turn, ``<think>`` with each step citing ``(x, y)``, then ``<answer>``;
the episode ends after it: ``"final"`` when it holds ``</answer>``, else ``"no_action"``.

``response(turns, dot)`` rebuilds the model's output stream that ViGoRL's scorers read: the turns with each
observation text between them.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import re

from PIL import Image

from vrrl_jax.tasks.vigorl import crop as crop_lib
from vrrl_jax.tasks.vigorl import spec as spec_lib
from vrrl_jax.tasks.vigorl.scene import POINT

MULTI_TURN, GROUNDED_THINKING = "multi_turn", "grounded_thinking"
PROTOCOLS = (MULTI_TURN, GROUNDED_THINKING)
TOOL_NAME = "search_coordinate"
OBSERVATION_DOT = (
  "<observation>\nHere is the crop of the image centered on the coordinate, with a red dot at the coordinate "
  "location:\n<image></observation>"
)
OBSERVATION = "<observation>\nHere is the crop of the image centered on the coordinate:\n<image></observation>"
FORCED_ANSWER = (
  "<think> Based on all the information I've gathered, I'll now provide my final answer. </think>\n<answer>"
)
WAIT = "Wait, this seems off. Let's try something else."
MAX_IMAGES = MAX_TURNS = 5  # the question's image + 4 crops; 5 generation rounds
# Generation of a turn stops at these (GROUNDING_SPEC 2), as well as at the end-of-turn token.
TURN_STOP_STRINGS = ("</tool_call>", "</answer>")

FINAL, NO_ACTION, BAD_CALL, MAX_TURNS_REASON = "final", "no_action", "bad_call", "max_turns"
DONE_REASONS = (FINAL, NO_ACTION, BAD_CALL, MAX_TURNS_REASON)

_TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_CITED_POINT_RE = re.compile(r"\((\d+)\s*,\s*(\d+)\)")
_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def observation_text(dot: bool) -> str:
  return OBSERVATION_DOT if dot else OBSERVATION


def format_call(x: int, y: int) -> str:
  args = json.dumps({"name": TOOL_NAME, "arguments": {"coordinate": [int(x), int(y)]}})
  return f"<tool_call>\n{args}\n</tool_call>"


def answer_hint(spec) -> str:
  """How the answer is written: a point, or one word from the scene kind's vocabulary."""
  spec = spec_lib.parse_spec(spec)
  if spec_lib.scene_of(spec).answer_type == POINT:
    return "a point (x, y)"
  module = spec_lib.generator(spec.kind)
  words = {"color": getattr(module, "COLORS", ()), "shape": getattr(module, "SHAPES", ())}.get(spec.question, ())
  return "one word" + (f" ({', '.join(words)})" if words else "")


def task_prompt(spec, protocol: str) -> str:
  spec = spec_lib.parse_spec(spec)
  scene = spec_lib.scene_of(spec)
  head = (
    f"{scene.question}\nThe image is {spec.view_width} x {spec.view_height} pixels; a point is (x, y) in integer "
    "pixels from the top-left corner.\n"
  )
  if protocol == GROUNDED_THINKING:
    return head + (
      "Think step by step inside <think> </think>, each step citing the point (x, y) it looks at. "
      f"Then answer inside <answer> </answer> with {answer_hint(spec)}."
    )
  return head + (
    "In each turn think inside <think> </think>, then either look closer at a point:\n"
    f"{format_call(0, 0).replace('[0, 0]', '[x, y]')}\n"
    f"and you will see a crop of the image centered on it; or answer inside <answer> </answer> with "
    f"{answer_hint(spec)}."
  )


@dataclasses.dataclass(frozen=True)
class Turn:
  """What one assistant turn does: ``action`` is "answer", "call" or None; ``point`` a valid call's coordinate."""

  text: str
  action: str | None
  point: tuple[int, int] | None = None


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def call_point(body: str) -> tuple[int, int] | None:
  """A tool call body's ``arguments.coordinate`` as two ints, else None."""
  try:
    call = json.loads(body)
  except (ValueError, RecursionError):
    return None
  args = call.get("arguments") if isinstance(call, dict) else None
  point = args.get("coordinate") if isinstance(args, dict) else None
  if isinstance(point, list) and len(point) == 2 and all(_is_int(v) for v in point):
    return int(point[0]), int(point[1])
  return None


def read_turn(text: str) -> Turn:
  """The multi-turn reading of one assistant turn (rules 1-3 of the module docstring)."""
  answer_end, call_end = text.find("</answer>"), text.find("</tool_call>")
  if answer_end >= 0 and (call_end < 0 or answer_end < call_end):
    return Turn(text, "answer")
  if call_end < 0:
    return Turn(text, None)
  match = _TOOL_CALL_RE.search(text[: call_end + len("</tool_call>")])
  return Turn(text, "call", call_point(match.group(1)) if match else None)


def cited_points(text: str) -> list[tuple[int, int]]:
  """The ``(x, y)`` points a grounded-thinking turn cites inside its first ``<think>`` block."""
  think = _THINK_RE.search(text)
  return [(int(x), int(y)) for x, y in _CITED_POINT_RE.findall(think.group(1))] if think else []


def response(turns, dot: bool) -> str:
  """The stream ViGoRL's multi-turn scorers read: every turn, with the observation text between two turns."""
  return ("\n" + observation_text(dot) + "\n").join(turns)


@dataclasses.dataclass(frozen=True)
class Step:
  done: bool
  reason: str | None = None
  feedback_text: str | None = None
  feedback_image: Image.Image | None = None
  next_opening: str | None = None


@dataclasses.dataclass(frozen=True)
class CropSettings:
  """ViGoRL's settings per task (GROUNDING_SPEC section 2): window half-side ``offset`` (view pixels), the crop's
  side after the resize, the dot, and the processor's multiple the side is rounded to."""

  offset: int
  crop_size: int
  dot: bool
  multiple: int = 28


class Episode:
  """One conversation on one spec. ``turns``: assistant texts (a forced opening included); ``images``: the
  question's image (original pixels) then each crop; ``points``: each turn's call coordinate (None when none)."""

  def __init__(
    self, spec, *, protocol: str, crop: CropSettings, max_turns: int = MAX_TURNS, max_images: int = MAX_IMAGES
  ):
    if protocol not in PROTOCOLS:
      raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    for name, value in (("max_turns", max_turns), ("max_images", max_images)):
      if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    self.spec = spec_lib.parse_spec(spec)
    self.protocol, self.crop = protocol, crop
    self.max_turns = 1 if protocol == GROUNDED_THINKING else int(max_turns)
    self.max_images = int(max_images)
    self.images: list[Image.Image] = [spec_lib.scene_of(self.spec).image]
    self.turns: list[str] = []
    self.points: list[tuple[int, int] | None] = []
    self.done, self.reason = False, None

  def first_prompt(self) -> tuple[str, Image.Image]:
    return task_prompt(self.spec, self.protocol), self.images[0]

  def _end(self, reason: str) -> Step:
    self.done, self.reason = True, reason
    return Step(True, reason)

  def step(self, assistant_text: str) -> Step:
    if self.done:
      raise RuntimeError(f"episode already ended ({self.reason}) after {len(self.turns)} turns")
    self.turns.append(assistant_text)
    if self.protocol == GROUNDED_THINKING:
      self.points.append(None)
      return self._end(FINAL if "</answer>" in assistant_text else NO_ACTION)
    turn = read_turn(assistant_text)
    self.points.append(turn.point)
    if turn.action == "answer":
      return self._end(FINAL)
    if turn.action is None:
      return self._end(NO_ACTION)
    if turn.point is None:
      return self._end(BAD_CALL)
    if len(self.turns) >= self.max_turns or len(self.images) >= self.max_images:
      return self._end(MAX_TURNS_REASON)
    image = crop_lib.zoom_crop(
      self.images[0],
      self.spec.view_size,
      turn.point,
      offset=self.crop.offset,
      crop_size=self.crop.crop_size,
      multiple=self.crop.multiple,
      dot=self.crop.dot,
    )
    self.images.append(image)
    last = len(self.images) >= self.max_images or len(self.turns) + 1 >= self.max_turns
    return Step(False, None, observation_text(self.crop.dot), image, FORCED_ANSWER if last else None)
