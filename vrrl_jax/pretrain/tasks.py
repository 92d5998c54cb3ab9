"""The perception tasks of pretraining: an image and a question, answered with a dense text target.

Each task teaches seeing, never planning: no answer is a route to take (that is SFT's and RL's job).

- ``map``: the map, cell by cell, one row per line (``S`` the elf, ``G`` the gift, ``H`` a hole, ``F`` ice). This
  is also where the elf, the gift and each hole are: held-out accuracy is reported per kind of cell.
- ``route``: a feedback image (a route drawn on the map, as the environment shows after a turn) traced cell by cell
  (``*`` where the star is, ``o`` where the route passes, ``.`` elsewhere), then whether it falls in a hole, leaves the
  grid, reaches the gift.

Answers are grids, not coordinates: naming a cell ("row 2 column 3") stayed at chance for the tiny model even when
trained alone (BENCHMARKS.md, "Perception pretraining"). Rotary positions reach attention scores, not the values a
head copies, so an absolute row number is hard to read out; a grid answer only needs the k-th answer cell to attend
to the k-th image token, which is what reading the map cell by cell already learns.

An example carries the answer's *units*: character spans of the answer that are scored as one (a cell of the map,
the elf's location, the hole verdict...). Held-out accuracy of a unit is whether every answer token overlapping
its span is predicted right under teacher forcing; an example is right when every answer token is, which is
exactly when greedy decoding would reproduce the answer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from vrrl_jax.tasks.frozenlake import maps, render

TASKS = ("map", "route")
QUESTIONS = {
  "map": "Read the map row by row: S is the elf, G the gift, H a hole, F ice.",
  "route": "Trace the drawn route row by row: o where it passes, * where it ends, . elsewhere. "
  "Does it fall in a hole, leave the grid, reach the gift?",
}
CELL_KINDS = {"S": "elf", "G": "gift", "H": "hole", "F": "ice"}  # a map cell's unit kind, besides "cell"
_ACTIONS = tuple(maps.MOVES)


@dataclasses.dataclass(frozen=True)
class Example:
  """One image-question-answer example. ``units``: (unit kind, start, end) character spans of ``answer``."""

  task: str
  image: Any  # PIL image
  answer: str
  units: tuple[tuple[str, int, int], ...]

  def messages(self) -> list[dict[str, Any]]:
    return [
      {
        "role": "user",
        "content": [{"type": "image", "image": self.image}, {"type": "text", "text": QUESTIONS[self.task]}],
      },
      {"role": "assistant", "content": self.answer},
    ]


class _Answer:
  """Builds an answer line by line while recording the units' character spans."""

  def __init__(self):
    self.text, self.units = "", []

  def add(self, text: str, unit: str | None = None) -> None:
    if unit is not None:
      self.units.append((unit, len(self.text), len(self.text) + len(text)))
    self.text += text


def map_example(spec: maps.MapSpec, style: str) -> Example:
  out = _Answer()
  for r, row in enumerate(spec.layout):
    for c, cell in enumerate(row):
      out.units.append((CELL_KINDS[cell], len(out.text), len(out.text) + 1))
      out.add(cell, "cell")
      out.add(" " if c < len(row) - 1 else "")
    out.add("\n" if r < spec.level - 1 else "")
  return Example("map", render.render_map(spec, style), out.text, tuple(out.units))


def random_route(spec: maps.MapSpec, rng: np.random.Generator) -> tuple[str, ...]:
  """A route as a model might propose it: the optimal one, the optimal one with one move changed, or random
  moves (1 to 2 x the grid side), so ends in holes, off the grid and at the gift all occur."""
  kind = rng.integers(3)
  optimal = tuple(maps.shortest_path(spec))
  if kind == 0:
    return optimal
  if kind == 1:
    route = list(optimal)
    route[rng.integers(len(route))] = _ACTIONS[rng.integers(len(_ACTIONS))]
    return tuple(route)
  return tuple(_ACTIONS[i] for i in rng.integers(len(_ACTIONS), size=rng.integers(1, 2 * spec.level + 1)))


def route_trace(spec: maps.MapSpec, actions: Sequence[str]) -> list[str]:
  """The drawn route, cell by cell (rows of ``o`` / ``*`` / ``.``): ``*`` the cell of its last vertex (the star),
  ``o`` the start and every other cell a vertex lies in, ``.`` the rest; vertices in phantom cells off the grid
  are not cells of the map and appear only as the verdict ``off grid: yes``."""
  w = maps.walk(spec, actions)
  grid = [["."] * spec.level for _ in range(spec.level)]
  for r, c in (spec.start_rc, *w.positions):
    if 0 <= r < spec.level and 0 <= c < spec.level:
      grid[r][c] = "o"
  r, c = w.positions[-1] if w.positions else spec.start_rc
  if 0 <= r < spec.level and 0 <= c < spec.level:
    grid[r][c] = "*"
  return ["".join(row) for row in grid]


def route_example(spec: maps.MapSpec, actions: Sequence[str], style: str) -> Example:
  w = maps.walk(spec, actions)
  trace = route_trace(spec, actions)
  out = _Answer()
  start = len(out.text)
  for r, row in enumerate(trace):
    for c, cell in enumerate(row):
      out.add(cell, "end" if cell == "*" else None)
      out.add(" " if c < len(row) - 1 else "")
    out.add("\n")
  out.units.append(("trace", start, len(out.text) - 1))
  out.add("hole: ")
  out.add("yes" if any(w.in_hole) else "no", "hole")
  out.add("\noff grid: ")
  out.add("yes" if any(w.off_grid) else "no", "off_grid")
  out.add("\ngift: ")
  out.add("yes" if spec.target_rc in w.elf else "no", "gift")
  return Example("route", render.render_feedback(spec, actions, style), out.text, tuple(out.units))


def make_example(task: str, spec: maps.MapSpec, rng: np.random.Generator, style: str) -> Example:
  if task == "map":
    return map_example(spec, style)
  if task == "route":
    return route_example(spec, random_route(spec, rng), style)
  raise ValueError(f"unknown pretraining task {task!r}; tasks are {TASKS}")


def unit_token_spans(offsets: Sequence[tuple[int, int]], units: Sequence[tuple[str, int, int]]) -> list[np.ndarray]:
  """For each unit, the indices of the answer tokens whose character span overlaps it (``offsets``: each token's
  (start, end) in the answer, as a fast tokenizer's ``offset_mapping``)."""
  spans = []
  for kind, start, end in units:
    idx = np.array([i for i, (s, e) in enumerate(offsets) if s < end and e > start], np.int64)
    if idx.size == 0:
      raise ValueError(f"unit {kind!r} at characters {start}:{end} covers no token")
    spans.append(idx)
  return spans
