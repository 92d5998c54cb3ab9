"""Parser for one assistant turn of the reflection protocol (VRRL_SPEC section 1).

A turn is a *route* (``<ANSWER>up right</ANSWER>``, optionally after ``<THINK>...</THINK>``) or a
*final* commit (``<FINAL>up right</FINAL>``). Tags are case-insensitive; ``<FINAL>`` wins when both
appear; bodies are split on commas and whitespace; any token other than up/down/left/right makes the
turn invalid; an empty body is an empty action list. Parsing never raises on model text.
"""

from __future__ import annotations

import dataclasses
import re

from vrrl_jax.tasks.frozenlake.maps import MOVES

ROUTE = "route"
FINAL = "final"

_FINAL_RE = re.compile(r"<final\b[^>]*>(.*?)</final>", re.DOTALL | re.IGNORECASE)
_ANSWER_RE = re.compile(r"<answer\b[^>]*>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
# A THINK block counts only when closed, as upstream's reward checks it.
_THINK_RE = re.compile(r"<think\b[^>]*>.*?</think>", re.DOTALL | re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class ParsedTurn:
  """``kind`` is ROUTE, FINAL or None (no recognised tag). ``actions`` is None when a token is not a
  move. ``ok`` is True iff a tag was found and every token is a move."""

  kind: str | None
  actions: tuple[str, ...] | None
  ok: bool
  has_think: bool
  text: str

  @property
  def is_route(self) -> bool:
    return self.kind == ROUTE

  @property
  def is_final(self) -> bool:
    return self.kind == FINAL


def parse_actions(body: str | None) -> tuple[tuple[str, ...] | None, bool]:
  """Splits a tag body on commas, then whitespace; lower-cases tokens. Returns (actions, ok)."""
  if body is None:
    return None, False
  tokens = []
  for chunk in str(body).split(","):
    for raw in chunk.split():
      tok = raw.strip().lower()
      if tok not in MOVES:
        return None, False
      tokens.append(tok)
  return tuple(tokens), True


def parse_turn(text: str | None) -> ParsedTurn:
  """Parses one assistant turn's text (without chat markers)."""
  text = "" if text is None else str(text)
  has_think = _THINK_RE.search(text) is not None
  m = _FINAL_RE.search(text)
  kind = FINAL
  if m is None:
    m = _ANSWER_RE.search(text)
    kind = ROUTE
  if m is None:
    return ParsedTurn(None, None, False, has_think, text)
  actions, ok = parse_actions(m.group(1))
  return ParsedTurn(kind, actions, ok, has_think, text)


def format_actions(actions) -> str:
  """The canonical space-separated rendering used inside tags."""
  return " ".join(actions)
