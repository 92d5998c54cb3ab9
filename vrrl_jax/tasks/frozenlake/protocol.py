"""The multi-turn reflection protocol (VRRL_SPEC section 1): prompt texts and one episode's state.

The texts are upstream's, word for word (github fc2869/VRRL @ 038e4d97):

- ``TASK_PROMPT``: ``prompts.py:SYSTEM_PROMPT_TAG_VPRL_DIRECT``, which
  ``EasyR1/training/format_prompt/frozenlake_reflection.jinja`` renders to with an empty ``content``.
  Training puts it in the user turn after the dataset's ``content`` (the map image); the eval script
  (``api_inference_frozenlake.py``) sends it as the system message and the user turn is
  ``FIRST_USER_TEXT`` + the map image.
- ``FEEDBACK_TEXT``: ``FEEDBACK_USER_PROMPT_REFLECTION`` (same string in
  ``verl/workers/rollout/frozenlake_helpers.py`` and ``api_inference_frozenlake.py``); every feedback
  user turn is the feedback image followed by this text.

Episode ending, as upstream's rollout (``multi_turn_rollout_frozenlake.py``) and eval loop:
a turn that does not parse (``parse_turn(...).ok`` is False: no ``<ANSWER>``/``<FINAL>`` tag, or a token
that is not a move) ends it with ``"format_error"``; a parseable ``<FINAL>`` ends it with ``"final"`` on
any turn, the first included; a parseable ``<ANSWER>`` gets a feedback image unless it was turn
``max_turns``, which ends it with ``"max_turns"`` (no feedback is rendered after the last turn). Whether
the turns *follow* the format (THINK placement, FINAL repeating the last route, empty lists, ...) is
the reward's format gate, not the episode's concern.
"""

from __future__ import annotations

import dataclasses

from PIL import Image

from vrrl_jax.tasks.frozenlake import maps, parse, render

TASK_PROMPT = (
  "Task: Frozen Lake Shortest Path Planning\n"
  "You are given an image of a grid-based environment. In this environment:\n"
  "- An elf marks the starting position.\n"
  "- A gift represents the goal.\n"
  "- Some cells contain ice holes that are impassable for the elf.\n"
  '- The elf can move in one of four directions only: "up", "down", "left",\n'
  'or "right". Each move transitions the elf by one cell in the\n'
  "corresponding absolute direction. Diagonal movement is not permitted.\n"
  "Your task is to analyze the image and generate the shortest valid\n"
  "sequence of actions that moves the elf from the starting position to\n"
  "the goal without stepping into any ice holes.\n"
  "Provide your final answer enclosed between <ANSWER> and </ANSWER>, for\n"
  "example: <ANSWER>right up up</ANSWER>."
)
FIRST_USER_TEXT = "Generate the shortest action sequence."
FEEDBACK_TEXT = (
  "The image shows your proposed action sequence executed on the grid.\n"
  "Verify the path against the task requirements. If the path reaches the\n"
  "gift without stepping on any ice holes, confirm with\n"
  "<FINAL>actions</FINAL>. Otherwise, provide your reasoning in\n"
  "<THINK>...</THINK> and a revised sequence in <ANSWER>actions</ANSWER>."
)

FINAL = "final"
FORMAT_ERROR = "format_error"
MAX_TURNS = "max_turns"
DONE_REASONS = (FINAL, FORMAT_ERROR, MAX_TURNS)
TRAIN_MAX_TURNS, EVAL_MAX_TURNS = 8, 10


@dataclasses.dataclass(frozen=True)
class Step:
  """What the environment answers to one assistant turn: feedback (image + text) or the end."""

  parsed: parse.ParsedTurn
  done: bool
  reason: str | None = None  # one of DONE_REASONS when done
  feedback_text: str | None = None
  feedback_image: Image.Image | None = None


class Episode:
  """One conversation on one map. ``turns`` (assistant texts) is what ``score_turns(turns, spec)``
  scores; ``images`` is the map image followed by one feedback image per route turn that got one."""

  def __init__(self, spec, *, max_turns: int = TRAIN_MAX_TURNS, style: str | render.RenderStyle = "default"):
    if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1:
      raise ValueError(f"max_turns must be a positive int, got {max_turns!r}")
    self.spec = maps.parse_spec(spec)
    self.max_turns = max_turns
    self.style = render.get_style(style)
    self.turns: list[str] = []
    self.parsed: list[parse.ParsedTurn] = []
    self.images: list[Image.Image] = [render.render_map(self.spec, self.style)]
    self.done = False
    self.reason: str | None = None

  def first_prompt(self) -> tuple[str, Image.Image]:
    return TASK_PROMPT, self.images[0]

  def step(self, assistant_text: str) -> Step:
    if self.done:
      raise RuntimeError(f"episode already ended ({self.reason}) after {len(self.turns)} turns")
    turn = parse.parse_turn(assistant_text)
    self.turns.append(turn.text)
    self.parsed.append(turn)
    if not turn.ok:
      return self._end(turn, FORMAT_ERROR)
    if turn.is_final:
      return self._end(turn, FINAL)
    if len(self.turns) >= self.max_turns:
      return self._end(turn, MAX_TURNS)
    image = render.render_feedback(self.spec, turn.actions, self.style)
    self.images.append(image)
    return Step(turn, False, None, FEEDBACK_TEXT, image)

  def _end(self, turn: parse.ParsedTurn, reason: str) -> Step:
    self.done, self.reason = True, reason
    return Step(turn, True, reason)

  @property
  def routes(self) -> list[tuple[str, ...]]:
    """The action lists of the parsed route (``<ANSWER>``) turns, in order."""
    return [p.actions for p in self.parsed if p.ok and p.is_route]
