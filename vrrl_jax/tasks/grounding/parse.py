"""Parser for one assistant turn of the grounding protocol; never raises on model text.

A turn is ``<think>...</think>`` followed by one action: a pointing call or ``<answer>(x, y)</answer>``. Only the
text after the last ``</think>`` is searched for the action (a call written inside the reasoning does not count);
a turn without a closed ``<think>...</think>`` block has no action at all. Tags are case-insensitive.

Two pointing formats (``POINT_FORMATS``):

- ``"tool_call"`` (the default): ``<tool_call>{"name": "pointing", "arguments": {"coordinate": [x, y]}}</tool_call>``,
  a Qwen-style tool call (the JSON must be an object with that name and a list of exactly two ints);
- ``"points"``: VRRL's older ``<points x1="X" y1="Y">label</points>``; in a tag with several numbered points
  (``x1 y1 x2 y2 ...``) the highest-numbered complete pair counts.

When a turn holds several calls, the last valid one counts. Coordinates are integers of at most ``MAX_DIGITS``
digits (a sign allowed); anything else (floats, fractions, huge numbers) is not a valid coordinate. An answer that
appears after ``</think>`` makes the turn an answer turn even if a call is there too.

``well_formed`` is the strict shape the reward's format gate asks of every turn: the stripped text starts with
``<think>``, has exactly one ``<think>`` and one ``</think>``, and after ``</think>`` holds exactly one action with
a valid coordinate and nothing else but whitespace.
"""

from __future__ import annotations

import dataclasses
import json
import re

TOOL_CALL = "tool_call"
POINTS = "points"
POINT_FORMATS = (TOOL_CALL, POINTS)
DEFAULT_POINT_FORMAT = TOOL_CALL
POINT_TOOL_NAME = "pointing"
MAX_DIGITS = 6

POINT = "point"
ANSWER = "answer"

_THINK_OPEN_RE = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE_RE = re.compile(r"</think>", re.IGNORECASE)
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_ANSWER_BODY_RE = re.compile(rf"\s*\(\s*(-?\d{{1,{MAX_DIGITS}}})\s*,\s*(-?\d{{1,{MAX_DIGITS}}})\s*\)\s*")
_TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL | re.IGNORECASE)
_POINTS_RE = re.compile(r"<points\b([^<>]*)>(.*?)</points>", re.DOTALL | re.IGNORECASE)
_POINTS_ATTR_RE = re.compile(rf"\b([xy])(\d{{1,3}})\s*=\s*[\"']\s*(-?\d{{1,{MAX_DIGITS}}})\s*[\"']", re.IGNORECASE)
_CALL_RES = {TOOL_CALL: _TOOL_CALL_RE, POINTS: _POINTS_RE}


@dataclasses.dataclass(frozen=True)
class ParsedTurn:
  """``kind``: ``"answer"`` (an ``<answer>`` tag after ``</think>``), ``"point"`` (a pointing tag there) or None.
  ``point``: the answer's or the counted call's (x, y), None when absent or invalid. ``n_calls``: pointing tags
  after ``</think>``, valid or not."""

  text: str
  has_think: bool
  kind: str | None
  point: tuple[int, int] | None
  n_calls: int
  well_formed: bool

  @property
  def is_point(self) -> bool:
    return self.kind == POINT

  @property
  def is_answer(self) -> bool:
    return self.kind == ANSWER


def check_point_format(point_format: str) -> str:
  if point_format not in POINT_FORMATS:
    raise ValueError(f"unknown point_format {point_format!r}; choose one of {POINT_FORMATS}")
  return point_format


def _as_coord(value) -> int | None:
  if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= 10**MAX_DIGITS:
    return None
  return value


def _tool_call_point(body: str) -> tuple[int, int] | None:
  try:
    call = json.loads(body.strip())
  except (ValueError, RecursionError):
    return None
  if not isinstance(call, dict) or call.get("name") != POINT_TOOL_NAME:
    return None
  args = call.get("arguments")
  if not isinstance(args, dict):
    return None
  coord = args.get("coordinate")
  if not isinstance(coord, list) or len(coord) != 2:
    return None
  x, y = _as_coord(coord[0]), _as_coord(coord[1])
  return None if x is None or y is None else (x, y)


def _points_tag_point(attrs: str) -> tuple[int, int] | None:
  pairs: dict[int, dict[str, int]] = {}
  for axis, index, value in _POINTS_ATTR_RE.findall(attrs):
    pairs.setdefault(int(index), {})[axis.lower()] = int(value)
  complete = [i for i, p in pairs.items() if "x" in p and "y" in p]
  if not complete:
    return None
  best = pairs[max(complete)]
  return best["x"], best["y"]


def parse_answer(body: str) -> tuple[int, int] | None:
  m = _ANSWER_BODY_RE.fullmatch(body)
  return None if m is None else (int(m.group(1)), int(m.group(2)))


def parse_turn(text: str | None, point_format: str = DEFAULT_POINT_FORMAT) -> ParsedTurn:
  """Parses one assistant turn's text (without chat markers)."""
  check_point_format(point_format)
  text = "" if text is None else str(text)
  blocks = list(_THINK_RE.finditer(text))
  if not blocks:
    return ParsedTurn(text, False, None, None, 0, False)
  region = text[blocks[-1].end() :]
  calls = list(_CALL_RES[point_format].finditer(region))
  answers = list(_ANSWER_RE.finditer(region))
  stripped = text.strip()
  single_think = (
    stripped[:7].lower() == "<think>"
    and len(_THINK_OPEN_RE.findall(text)) == 1
    and len(_THINK_CLOSE_RE.findall(text)) == 1
  )
  if answers:
    point = parse_answer(answers[0].group(1))
    well = single_think and not calls and len(answers) == 1 and point is not None
    well = well and region.strip() == answers[0].group(0)
    return ParsedTurn(text, True, ANSWER, point, len(calls), well)
  if not calls:
    return ParsedTurn(text, True, None, None, 0, False)
  point = None
  for m in calls:
    got = _tool_call_point(m.group(1)) if point_format == TOOL_CALL else _points_tag_point(m.group(1))
    if got is not None:
      point = got
  well = single_think and len(calls) == 1 and point is not None and region.strip() == calls[0].group(0)
  return ParsedTurn(text, True, POINT, point, len(calls), well)


def format_call(x: int, y: int, point_format: str = DEFAULT_POINT_FORMAT, label: str = "target") -> str:
  """The canonical pointing call, as the task prompt shows it."""
  check_point_format(point_format)
  if point_format == TOOL_CALL:
    args = json.dumps({"name": POINT_TOOL_NAME, "arguments": {"coordinate": [int(x), int(y)]}})
    return f"<tool_call>\n{args}\n</tool_call>"
  return f'<points x1="{int(x)}" y1="{int(y)}">{label}</points>'


def format_answer(x: int, y: int) -> str:
  return f"<answer>({int(x)}, {int(y)})</answer>"


def format_turn(think: str, action: str) -> str:
  """``<think>think</think>`` then the action on its own line."""
  return f"<think>{think}</think>\n{action}"
