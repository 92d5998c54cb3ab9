"""FrozenLake map specs: validation, identity (layout hash) and BFS distances.

A spec is the plain mapping used by the upstream data: ``{layout, start_pos, target_pos, level}``
with ``layout`` a list of rows of ``S``/``F``/``H``/``G`` and positions as row-major cell indices.
Everything here is host-side Python/numpy; nothing is jitted.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from typing import Any, Mapping, Sequence

import numpy as np

CELL_TYPES = ("S", "F", "H", "G")
# (row delta, col delta) of each move, in the order the prompt lists them.
MOVES: dict[str, tuple[int, int]] = {
  "up": (-1, 0),
  "down": (1, 0),
  "left": (0, -1),
  "right": (0, 1),
}
# Upstream's rl_maps.json spells optimal actions with one capital letter.
SHORT_TO_MOVE = {"U": "up", "D": "down", "L": "left", "R": "right"}
UNREACHABLE = -1


class MapSpecError(ValueError):
  """A map spec that cannot describe a playable FrozenLake grid."""


@dataclasses.dataclass(frozen=True)
class MapSpec:
  """A validated map. ``layout`` is a tuple of row strings, e.g. ``("SF", "HG")``."""

  layout: tuple[str, ...]
  start_pos: int
  target_pos: int

  @property
  def level(self) -> int:
    return len(self.layout)

  @property
  def start_rc(self) -> tuple[int, int]:
    return divmod(self.start_pos, self.level)

  @property
  def target_rc(self) -> tuple[int, int]:
    return divmod(self.target_pos, self.level)

  def cell(self, r: int, c: int) -> str:
    return self.layout[r][c]

  def is_hole(self, r: int, c: int) -> bool:
    return self.layout[r][c] == "H"

  def holes(self) -> np.ndarray:
    """Boolean ``[L, L]`` array, True at holes."""
    return np.array([[ch == "H" for ch in row] for row in self.layout], dtype=bool)

  @property
  def layout_hash(self) -> str:
    return layout_hash(self.layout)

  @property
  def question_id(self) -> tuple:
    """The map's identity (level, start, goal, layout), independent of batch position."""
    return (self.level, self.start_pos, self.target_pos, self.layout_hash)

  def to_dict(self) -> dict[str, Any]:
    return {
      "layout": [list(row) for row in self.layout],
      "start_pos": self.start_pos,
      "target_pos": self.target_pos,
      "level": self.level,
    }


def layout_hash(layout: Sequence[Sequence[str]]) -> str:
  """sha256 of the row-joined layout, as upstream's ``layout_hash`` (verified on rl_maps.json)."""
  return hashlib.sha256("".join("".join(row) for row in layout).encode()).hexdigest()


def parse_spec(spec: Mapping[str, Any] | MapSpec, *, require_reachable: bool = False) -> MapSpec:
  """Validates a spec mapping (or upstream eval entry with ``metadata``) into a ``MapSpec``.

  Raises ``MapSpecError`` naming the problem. ``require_reachable`` additionally rejects maps
  whose goal cannot be reached (generation and training data need that; scoring does not).
  """
  if isinstance(spec, MapSpec):
    out = spec
  else:
    if not isinstance(spec, Mapping):
      raise MapSpecError(f"map spec must be a mapping, got {type(spec).__name__}")
    if "layout" not in spec and isinstance(spec.get("metadata"), Mapping):
      spec = spec["metadata"]
    for key in ("layout", "start_pos", "target_pos"):
      if key not in spec:
        raise MapSpecError(f"map spec is missing {key!r} (has {sorted(spec)})")
    raw = spec["layout"]
    if isinstance(raw, str) or not isinstance(raw, Sequence) or len(raw) == 0:
      raise MapSpecError("layout must be a non-empty list of rows")
    rows = []
    for i, row in enumerate(raw):
      if isinstance(row, str):
        row_s = row
      elif isinstance(row, Sequence) and all(isinstance(ch, str) and len(ch) == 1 for ch in row):
        row_s = "".join(row)
      else:
        raise MapSpecError(f"layout row {i} must be a string or a list of one-letter cells: {row!r}")
      rows.append(row_s)
    level = len(rows)
    for i, row_s in enumerate(rows):
      if len(row_s) != level:
        raise MapSpecError(f"layout must be square: row {i} has {len(row_s)} cells, expected {level}")
      bad = set(row_s) - set(CELL_TYPES)
      if bad:
        raise MapSpecError(f"layout row {i} has unknown cell types {sorted(bad)}; allowed {CELL_TYPES}")
    if "level" in spec and spec["level"] is not None and int(spec["level"]) != level:
      raise MapSpecError(f"level {spec['level']} does not match the {level}x{level} layout")
    try:
      start, target = int(spec["start_pos"]), int(spec["target_pos"])
    except (TypeError, ValueError) as e:
      raise MapSpecError(f"start_pos/target_pos must be integers: {e}") from None
    out = MapSpec(tuple(rows), start, target)
  level = out.level
  n = level * level
  for name, pos in (("start_pos", out.start_pos), ("target_pos", out.target_pos)):
    if not 0 <= pos < n:
      raise MapSpecError(f"{name}={pos} is outside the {level}x{level} grid (0..{n - 1})")
  flat = "".join(out.layout)
  if flat.count("S") != 1 or flat.count("G") != 1:
    raise MapSpecError(f"layout must have exactly one S and one G (has {flat.count('S')} S, {flat.count('G')} G)")
  if flat[out.start_pos] != "S":
    raise MapSpecError(f"start_pos={out.start_pos} is not the S cell (cell is {flat[out.start_pos]!r})")
  if flat[out.target_pos] != "G":
    raise MapSpecError(f"target_pos={out.target_pos} is not the G cell (cell is {flat[out.target_pos]!r})")
  if require_reachable and shortest_path_len(out) is None:
    raise MapSpecError("the goal is unreachable from the start")
  return out


def distance_map(spec: MapSpec) -> np.ndarray:
  """BFS distance to the goal for every cell, ``[L, L]`` int; holes and cut-off cells are -1.

  Holes are never entered, so a hole's distance is -1 even next to the goal; this matches the
  ``distance_map`` of upstream's rl_maps.json (which lists only non-hole reachable cells).
  """
  level = spec.level
  dist = np.full((level, level), UNREACHABLE, dtype=np.int32)
  goal = spec.target_rc
  dist[goal] = 0
  queue = collections.deque([goal])
  while queue:
    r, c = queue.popleft()
    for dr, dc in MOVES.values():
      nr, nc = r + dr, c + dc
      if 0 <= nr < level and 0 <= nc < level and dist[nr, nc] == UNREACHABLE and not spec.is_hole(nr, nc):
        dist[nr, nc] = dist[r, c] + 1
        queue.append((nr, nc))
  return dist


def shortest_path_len(spec: MapSpec) -> int | None:
  """BFS shortest route length from S to G, or None if the goal is unreachable."""
  d = int(distance_map(spec)[spec.start_rc])
  return None if d == UNREACHABLE else d


def shortest_path(spec: MapSpec) -> list[str] | None:
  """One optimal action list (ties broken in MOVES order), or None if unreachable."""
  dist = distance_map(spec)
  r, c = spec.start_rc
  if dist[r, c] == UNREACHABLE:
    return None
  actions = []
  while dist[r, c] > 0:
    for name, (dr, dc) in MOVES.items():
      nr, nc = r + dr, c + dc
      if 0 <= nr < spec.level and 0 <= nc < spec.level and dist[nr, nc] == dist[r, c] - 1:
        actions.append(name)
        r, c = nr, nc
        break
  return actions


@dataclasses.dataclass(frozen=True)
class Walk:
  """What executing an action list does. ``positions`` has one ``(r, c)`` per action, and may leave
  the grid (the phantom cell of an off-grid move); the elf itself stays put on an off-grid move."""

  positions: tuple[tuple[int, int], ...]  # the drawn vertex after each action
  elf: tuple[tuple[int, int], ...]  # where the elf is after each action (never off-grid)
  off_grid: tuple[bool, ...]
  in_hole: tuple[bool, ...]


def walk(spec: MapSpec, actions: Sequence[str]) -> Walk:
  """Executes ``actions`` without stopping at holes or the goal (the renderer and reward both need
  the whole walk). Unknown action names raise ``KeyError``; the parser never produces them."""
  level = spec.level
  r, c = spec.start_rc
  positions, elf, off, hole = [], [], [], []
  for a in actions:
    dr, dc = MOVES[a]
    nr, nc = r + dr, c + dc
    inside = 0 <= nr < level and 0 <= nc < level
    positions.append((nr, nc))
    off.append(not inside)
    if inside:
      r, c = nr, nc
    elf.append((r, c))
    hole.append(inside and spec.is_hole(r, c))
  return Walk(tuple(positions), tuple(elf), tuple(off), tuple(hole))


def is_exact_match(spec: MapSpec, actions: Sequence[str], n_opt: int | None = None) -> bool:
  """EM: ``len(a) == n_opt``, no off-grid move, no hole, last move lands on the goal."""
  n_opt = shortest_path_len(spec) if n_opt is None else n_opt
  if n_opt is None or len(actions) != n_opt or not actions:
    return False
  w = walk(spec, actions)
  if any(w.off_grid) or any(w.in_hole):
    return False
  return w.elf[-1] == spec.target_rc
