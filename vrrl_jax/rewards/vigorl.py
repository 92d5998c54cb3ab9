"""ViGoRL's four reward scorers, reproduced exactly.

Sarch et al., "Grounded Reinforcement Learning for Visual Reasoning" (gabesarch/grounded-rl), as the shared
``docs/GROUNDING_SPEC.md`` section 2 ("ViGoRL's four scorers") reads them. Each scorer is ``(response, ground_truth)
-> {"overall", "format", "accuracy"}`` with float values; model text never raises (anything that does not parse
scores 0), a non-str argument does (TypeError).

- ``point_in_bbox_multicrop``: multi-turn GUI grounding; overall = 0.6 * accuracy + 0.4 * format.
- ``string_match_multiturn``: multi-turn visual search; overall = 0.6 * accuracy + 0.4 * format.
- ``point_in_bbox_grounded_thinking``: single-turn GUI grounding; overall = 0.5 * accuracy + 0.5 * format.
- ``string_match_grounded_thinking``: single-turn multiple choice (SAT-2); overall = 0.5 * accuracy + 0.5 * format.

Quirks kept on purpose, because the published numbers were measured with them:

- Multi-turn format can exceed 1: ``1.0 + 0.2 * (u - 1)`` for ``u`` tool-call coordinates at least 10 px apart
  (greedy, in order), so overall can exceed 1 too.
- The tag grammar is case-insensitive (``<THINK>`` is ``<think>``) but the ending rule, the tool-call JSON regex and the
  answer regexes are case-sensitive: an upper-case ``<TOOL_CALL>`` passes the grammar, is never JSON-checked and earns
  no bonus; an upper-case ``<ANSWER>`` fails the answer rule. Tags with other names (``<image>``) are plain text.
- A ``<tool_call>`` whose body is not ``{...}`` is no match of the tool-call regex, so it is never JSON-checked.
- "Int" is Python's ``isinstance(x, int)``: ``true`` in the JSON or ``True`` in an answer counts as 1.
- "Parses" is ``ast.literal_eval``; accuracy then applies ``tuple(...)``, so ``[5, 5]``, ``5, 5`` (and even a dict's
  keys or a bytes literal's values) are points, while the format answer rules want a real tuple.
- The accuracy answer regex has no DOTALL: an answer split over lines is missed and the whole response is parsed
  instead (usually scoring 0) while the format, whose regexes cross lines, can still be 1.
- ``string_match_multiturn`` compares lower-cased both sides; ``string_match_grounded_thinking`` lower-cases only the
  prediction (a ground truth with capitals never matches) after stripping one ``A.`` / ``B)`` style prefix, which also
  eats a leading "U." of "U.S.".
- The grounded-thinking format is a ``re.fullmatch`` over the unstripped response: leading or trailing whitespace, or a
  trailing ``<|im_end|>``, gives 0; its coordinate check is ``\\d`` (Unicode digits) in the first ``<think>`` block.

Departures only where upstream would raise instead of scoring: the 10 px spacing is compared as
``dx**2 + dy**2 >= 100`` in integers (upstream takes ``math.sqrt``: the same answer for every coordinate a float can
hold, an OverflowError beyond), and parse failures of every kind score 0 where upstream lets some (MemoryError,
RecursionError) escape.
"""

import ast
import json
import re
import warnings

__all__ = [
  "point_in_bbox_multicrop",
  "string_match_multiturn",
  "point_in_bbox_grounded_thinking",
  "string_match_grounded_thinking",
]

# Multi-turn format.
_ENDS_WITH_ANSWER_RE = re.compile(r"</answer>\s*(<\|im_end\|>)?\s*$", re.DOTALL)
_TAG_RE = re.compile(r"<(/?)(tool_call|observation|think|answer)>", re.IGNORECASE)
_TOOL_JSON_RE = re.compile(r"<tool_call>\s*({.*?})\s*</tool_call>", re.DOTALL)
_POINT_ANSWER_RE = re.compile(r"<answer>\s*\(([^)]*)\)\s*</answer>")
_STRING_ANSWER_RE = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
# Accuracy.
_LINE_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>")
_STRING_ANSWER_ANY_CASE_RE = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL | re.IGNORECASE)
_OPTION_PREFIX_RE = re.compile(r"^[A-Za-z][\.\)]\s*(.*)")
# Single-turn (grounded thinking) format.
_SINGLE_TURN_RE = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_ANSWER_BODY_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_THINK_BODY_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_CITED_POINT_RE = re.compile(r"\((\d+)\s*,\s*(\d+)\)")

# (state, lower-cased tag) -> next state; a pair not listed is a grammar error, and "end" takes no further tag.
_GRAMMAR = {
  ("think_open", "<think>"): "think_close",
  ("think_close", "</think>"): "post_think",
  ("post_think", "<tool_call>"): "tool_close",
  ("post_think", "<answer>"): "answer_close",
  ("tool_close", "</tool_call>"): "obs_open",
  ("obs_open", "<observation>"): "obs_close",
  ("obs_close", "</observation>"): "think_open",
  ("answer_close", "</answer>"): "end",
}
_MIN_SPACING_PX = 10
_BONUS_PER_EXTRA_COORDINATE = 0.2
_UNPARSED = object()


def _check_str(response, ground_truth):
  """Model text may be anything, but a non-str is the caller's mistake and must not score quietly as 0."""
  for name, value in (("response", response), ("ground_truth", ground_truth)):
    if not isinstance(value, str):
      raise TypeError(f"ViGoRL scorers take str arguments; {name} is a {type(value).__name__}")


def _literal(text):
  """``ast.literal_eval`` that turns every failure (syntax, too deep, too many digits, ...) into ``_UNPARSED``, and
  keeps the compiler's SyntaxWarnings on model text ("1or 2": invalid decimal literal) out of the run's log."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", SyntaxWarning)
      return ast.literal_eval(text)
  except Exception:
    return _UNPARSED


def _as_tuple(value):
  """``tuple(value)`` as upstream applies it, or None where that fails (an int, an unparsed text)."""
  if value is _UNPARSED:
    return None
  try:
    return tuple(value)
  except Exception:
    return None


def _is_ints(value, n):
  """A tuple of exactly ``n`` ints (bools included, as ``isinstance`` has it)."""
  return isinstance(value, tuple) and len(value) == n and all(isinstance(v, int) for v in value)


def _grammar_ok(s):
  """think, then (tool_call, observation, think)* or answer, then no tag at all; nothing may be left open."""
  state = "think_open"
  for m in _TAG_RE.finditer(s):
    state = _GRAMMAR.get((state, m.group(0).lower()))
    if state is None:
      return False
  return state == "end"


def _tool_call_coordinates(s):
  """The coordinates of every tool call in order, or None if any call's JSON or coordinate is malformed."""
  coordinates = []
  for m in _TOOL_JSON_RE.finditer(s):
    try:
      call = json.loads(m.group(1))
    except Exception:
      return None
    arguments = call.get("arguments", {}) if isinstance(call, dict) else None
    coordinate = arguments.get("coordinate") if isinstance(arguments, dict) else None
    if not (isinstance(coordinate, list) and len(coordinate) == 2 and all(isinstance(v, int) for v in coordinate)):
      return None
    coordinates.append((coordinate[0], coordinate[1]))
  return coordinates


def _spread_count(coordinates):
  """Greedy count of coordinates at least 10 px (Euclidean) from every one kept before; exact in integers."""
  kept = []
  for x, y in coordinates:
    if all((x - kx) ** 2 + (y - ky) ** 2 >= _MIN_SPACING_PX**2 for kx, ky in kept):
      kept.append((x, y))
  return len(kept)


def _point_answer_ok(s):
  """Multicrop step 4: the first parenthesised answer parses to a tuple of two ints."""
  m = _POINT_ANSWER_RE.search(s)
  return m is not None and _is_ints(_literal("(" + m.group(1).strip() + ")"), 2)


def _string_answer_ok(s):
  """Multiturn string step 4: the first answer has a non-empty body."""
  m = _STRING_ANSWER_RE.search(s)
  return m is not None and bool(m.group(1).strip())


def _multiturn_format(response, answer_ok):
  """Steps 1-5 of the shared multi-turn format: 0, or 1 plus 0.2 per extra well-spaced tool-call coordinate."""
  s = response.strip()
  if not _ENDS_WITH_ANSWER_RE.search(s) or not _grammar_ok(s):
    return 0.0
  coordinates = _tool_call_coordinates(s)
  if coordinates is None or not answer_ok(s):
    return 0.0
  u = _spread_count(coordinates)
  return 1.0 + _BONUS_PER_EXTRA_COORDINATE * (u - 1) if u > 1 else 1.0


def _point_in_bbox_accuracy(response, ground_truth):
  """1.0 iff the answer (or whole response) is 2 ints inside the 4-int truth box, edges included."""
  m = _LINE_ANSWER_RE.search(response)
  prediction = _as_tuple(_literal(m.group(1).strip() if m else response.strip()))
  truth = _as_tuple(_literal(ground_truth.strip()))
  if not _is_ints(truth, 4) or not _is_ints(prediction, 2):
    return 0.0
  x1, y1, x2, y2 = truth
  x, y = prediction
  return 1.0 if x1 <= x <= x2 and y1 <= y <= y2 else 0.0


def _grounded_format(response, answer_ok):
  """Base format (think then answer, whole response) times the coordinate check (a cited ``(x, y)`` in the think)."""
  if _SINGLE_TURN_RE.fullmatch(response) is None:
    return 0.0
  m = _ANSWER_BODY_RE.search(response)
  if m is None or not answer_ok(m.group(1).strip()):
    return 0.0
  think = _THINK_BODY_RE.search(response)
  return 1.0 if think is not None and _CITED_POINT_RE.search(think.group(1)) else 0.0


def _grounded_point_ok(body):
  return body.startswith("(") and body.endswith(")") and _is_ints(_literal(body), 2)


def point_in_bbox_multicrop(response: str, ground_truth: str) -> dict:
  """Multi-turn GUI grounding: answer ``(x, y)`` inside the truth box ``(x1, y1, x2, y2)``."""
  _check_str(response, ground_truth)
  fmt = _multiturn_format(response, _point_answer_ok)
  accuracy = _point_in_bbox_accuracy(response, ground_truth)
  return {"overall": 0.6 * accuracy + 0.4 * fmt, "format": fmt, "accuracy": accuracy}


def string_match_multiturn(response: str, ground_truth: str) -> dict:
  """Multi-turn visual search: the answer equals the truth, both stripped and lower-cased."""
  _check_str(response, ground_truth)
  fmt = _multiturn_format(response, _string_answer_ok)
  m = _STRING_ANSWER_ANY_CASE_RE.search(response)
  prediction = m.group(1).strip().lower() if m else response.strip().lower()
  accuracy = 1.0 if prediction == ground_truth.strip().lower() else 0.0
  return {"overall": 0.6 * accuracy + 0.4 * fmt, "format": fmt, "accuracy": accuracy}


def point_in_bbox_grounded_thinking(response: str, ground_truth: str) -> dict:
  """Single-turn GUI grounding: as the multicrop accuracy, with the single-turn format."""
  _check_str(response, ground_truth)
  fmt = _grounded_format(response, _grounded_point_ok)
  accuracy = _point_in_bbox_accuracy(response, ground_truth)
  return {"overall": 0.5 * accuracy + 0.5 * fmt, "format": fmt, "accuracy": accuracy}


def string_match_grounded_thinking(response: str, ground_truth: str) -> dict:
  """Single-turn multiple choice: the answer, less an option prefix, lower-cased, equals the stripped truth."""
  _check_str(response, ground_truth)
  fmt = _grounded_format(response, bool)
  m = _LINE_ANSWER_RE.search(response)
  prediction = m.group(1).strip() if m else response.strip()
  option = _OPTION_PREFIX_RE.match(prediction)
  if option is not None:
    prediction = option.group(1).strip()
  accuracy = 1.0 if prediction.lower() == ground_truth.strip() else 0.0
  return {"overall": 0.5 * accuracy + 0.5 * fmt, "format": fmt, "accuracy": accuracy}
