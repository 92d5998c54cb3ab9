"""Seeded FrozenLake map generator for levels 3..12, disjoint from the release's eval maps.

Hole density follows upstream's training maps. Measured on ``rl_maps.json`` (3,000 maps; density =
holes / L^2; every map has at least one hole; optimal length >= 2):

=========  ======  =======  ======  ======  ======  ======  ======
maps       n       mean     std     min     median  p95     max
=========  ======  =======  ======  ======  ======  ======  ======
4x4        1,000   0.2379   0.1043  0.0625  0.250   0.438   0.750
5x5        2,000   0.2285   0.0949  0.0400  0.240   0.400   0.600
pooled     3,000   0.2317   0.0982  0.0400  0.240   0.400   0.750
=========  ======  =======  ======  ======  ======  ======  ======

The two levels agree to within 0.01 in mean, so one distribution serves every level: a Beta fitted to
the pooled densities by moments, ``Beta(4.042, 13.404)`` (mean 0.2317, std 0.0982). A map draws
``p ~ Beta``, then ``n_holes = floor(p * L^2 + u)`` (u ~ U[0,1), unbiased rounding) clipped to
``[1, L^2 - min_path_len - 1]``, places the holes uniformly, and picks (start, goal) uniformly among
the ordered pairs of free cells whose BFS distance is at least ``min_path_len``. A placement with no
such pair is redrawn with the same hole count, so solvability does not thin out dense maps; only after
``_PLACEMENTS_PER_DENSITY`` failed placements is the density redrawn (that happens only for very dense
draws on large grids or a long ``min_path_len``). Start and goal may be anywhere, edges included.

Generated with the defaults (seed 11; 2,000 maps per level, 300 at L10/L12), density mean/std/max:
L3 0.232/0.104/0.67, L4 0.234/0.102/0.63, L5 0.233/0.100/0.68, L6 0.230/0.099/0.67,
L7 0.232/0.098/0.61, L8 0.225/0.099/0.61, L10 0.237/0.103/0.63, L12 0.226/0.098/0.62
(tests/test_frozenlake_generate.py checks L4/L5 against rl_maps.json).

Train/eval disjointness is by ``layout_hash`` (sha256 of the row-joined layout, S and G included):
``eval_layout_hashes`` loads the release's eval maps' hashes and every generator call takes an
``exclude`` set that generated maps never hit.
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Any, Iterable, Mapping

import numpy as np

from vrrl_jax.tasks.frozenlake import maps, release_data

MIN_LEVEL, MAX_LEVEL = 3, 12
# Method-of-moments Beta fit to the 3,000 upstream training-map densities (see module docstring).
HOLE_DENSITY_BETA = (4.042, 13.404)
# Upstream training maps never have an optimal route shorter than 2 (the eval maps go down to 1).
DEFAULT_MIN_PATH_LEN = 2
_PLACEMENTS_PER_DENSITY = 200
_MAX_DENSITY_DRAWS = 200
_SHORT = {v: k for k, v in maps.SHORT_TO_MOVE.items()}


def check_level(level: int) -> int:
  if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
    raise ValueError(f"level must be an int in {MIN_LEVEL}..{MAX_LEVEL}, got {level!r}")
  if not MIN_LEVEL <= level <= MAX_LEVEL:
    raise ValueError(f"level must be in {MIN_LEVEL}..{MAX_LEVEL}, got {level}")
  return int(level)


def check_min_path_len(level: int, min_path_len: int) -> int:
  """At most the grid's Manhattan diameter ``2*(L-1)``, so a request is always satisfiable."""
  if isinstance(min_path_len, bool) or not isinstance(min_path_len, (int, np.integer)):
    raise ValueError(f"min_path_len must be an int, got {min_path_len!r}")
  if not 1 <= min_path_len <= 2 * (level - 1):
    raise ValueError(f"min_path_len must be in 1..{2 * (level - 1)} for level {level}, got {min_path_len}")
  return int(min_path_len)


@functools.lru_cache(maxsize=None)
def _neighbours(level: int) -> tuple[tuple[int, ...], ...]:
  out = []
  for i in range(level * level):
    r, c = divmod(i, level)
    out.append(
      tuple((r + dr) * level + c + dc for dr, dc in maps.MOVES.values() if 0 <= r + dr < level and 0 <= c + dc < level)
    )
  return tuple(out)


def _bfs(free: list[bool], neighbours, src: int) -> dict[int, int]:
  """Distances from ``src`` to every free cell it reaches (flat indices; holes never entered)."""
  dist = {src: 0}
  frontier = [src]
  while frontier:
    nxt = []
    for i in frontier:
      d = dist[i] + 1
      for j in neighbours[i]:
        if free[j] and j not in dist:
          dist[j] = d
          nxt.append(j)
    frontier = nxt
  return dist


def _pick_start_goal(rng: np.random.Generator, free: list[bool], level: int, min_path_len: int):
  """A uniformly drawn ordered (start, goal) pair at BFS distance >= min_path_len, or None."""
  neighbours = _neighbours(level)
  pairs: list[tuple[int, int]] = []
  seen = set()
  for src in range(level * level):
    if not free[src] or src in seen:
      continue
    component = _bfs(free, neighbours, src)
    seen.update(component)
    if len(component) < min_path_len + 1:
      continue
    for s in component:
      dist = component if s == src else _bfs(free, neighbours, s)
      pairs.extend((s, g) for g, d in dist.items() if d >= min_path_len)
  if not pairs:
    return None
  return pairs[int(rng.integers(len(pairs)))]


def generate_map(
  rng: np.random.Generator,
  level: int,
  *,
  min_path_len: int = DEFAULT_MIN_PATH_LEN,
  exclude: Iterable[str] | frozenset[str] = frozenset(),
) -> maps.MapSpec:
  """One solvable map whose layout hash is not in ``exclude``. Deterministic given ``rng``'s state."""
  if not isinstance(rng, np.random.Generator):
    raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
  level = check_level(level)
  min_path_len = check_min_path_len(level, min_path_len)
  exclude = exclude if isinstance(exclude, (set, frozenset)) else frozenset(exclude)
  n_cells = level * level
  max_holes = n_cells - min_path_len - 1
  for _ in range(_MAX_DENSITY_DRAWS):
    p = rng.beta(*HOLE_DENSITY_BETA)
    n_holes = int(np.clip(np.floor(p * n_cells + rng.random()), 1, max_holes))
    for _ in range(_PLACEMENTS_PER_DENSITY):
      free = [True] * n_cells
      for i in rng.choice(n_cells, size=n_holes, replace=False):
        free[int(i)] = False
      pair = _pick_start_goal(rng, free, level, min_path_len)
      if pair is None:
        continue
      start, goal = pair
      flat = ["F" if f else "H" for f in free]
      flat[start], flat[goal] = "S", "G"
      layout = tuple("".join(flat[r * level : (r + 1) * level]) for r in range(level))
      if maps.layout_hash(layout) in exclude:
        continue
      return maps.parse_spec(maps.MapSpec(layout, start, goal), require_reachable=True)
  raise RuntimeError(
    f"no level-{level} map with min_path_len={min_path_len} outside the {len(exclude)} excluded layouts "
    f"after {_MAX_DENSITY_DRAWS * _PLACEMENTS_PER_DENSITY} placements; the exclusion set may cover "
    "nearly every layout of this size"
  )


def generate_maps(
  level: int,
  n: int,
  seed: int,
  *,
  min_path_len: int = DEFAULT_MIN_PATH_LEN,
  exclude: Iterable[str] = (),
  unique: bool = True,
  progress: bool = False,
) -> list[maps.MapSpec]:
  """``n`` maps from ``np.random.default_rng(seed)``. ``unique`` also keeps the batch free of repeats
  (upstream's 3,000 training layouts are all distinct)."""
  level = check_level(level)
  check_min_path_len(level, min_path_len)
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
    raise ValueError(f"n must be a non-negative int, got {n!r}")
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise ValueError(f"seed must be an int, got {seed!r}")
  rng = np.random.default_rng(seed)
  blocked = set(exclude)
  out = []
  steps = range(n)
  if progress:
    import tqdm

    steps = tqdm.tqdm(steps, desc=f"level {level} maps", unit="map")
  for _ in steps:
    spec = generate_map(rng, level, min_path_len=min_path_len, exclude=blocked)
    if unique:
      blocked.add(spec.layout_hash)
    out.append(spec)
  return out


def spec_record(spec: maps.MapSpec) -> dict[str, Any]:
  """The upstream ``rl_maps.json`` fields for a spec (``optimal_actions`` in upstream's U/D/L/R,
  ``distance_map`` over non-hole reachable cells only, keys as strings)."""
  spec = maps.parse_spec(spec, require_reachable=True)
  dist = maps.distance_map(spec).reshape(-1)
  actions = maps.shortest_path(spec)
  return {
    "level": spec.level,
    "layout": [list(row) for row in spec.layout],
    "start_pos": spec.start_pos,
    "target_pos": spec.target_pos,
    "optimal_actions": [_SHORT[a] for a in actions],
    "optimal_path_len": len(actions),
    "distance_map": {str(i): int(d) for i, d in enumerate(dist) if d >= 0},
    "hole_count": int(spec.holes().sum()),
    "layout_hash": spec.layout_hash,
  }


def _layouts_in(entries: Iterable[Mapping[str, Any]], source: str) -> set[str]:
  hashes = set()
  for i, entry in enumerate(entries):
    if not isinstance(entry, Mapping):
      raise ValueError(f"{source}: entry {i} is not a JSON object")
    body = entry["metadata"] if "layout" not in entry and isinstance(entry.get("metadata"), Mapping) else entry
    if "layout" not in body:
      raise ValueError(f"{source}: entry {i} has no 'layout' (keys {sorted(entry)})")
    hashes.add(maps.layout_hash(body["layout"]))
  return hashes


def load_layout_hashes(path: str | pathlib.Path) -> set[str]:
  """Layout hashes of every map in a JSON list or a JSONL file (upstream eval entries with
  ``metadata`` are accepted). Hashes are recomputed from the layouts, never trusted from the file."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"map file not found: {path}")
  text = path.read_text()
  if path.suffix == ".jsonl":
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
  else:
    entries = json.loads(text)
    if not isinstance(entries, list):
      raise ValueError(f"{path}: expected a JSON list of maps, got {type(entries).__name__}")
  return _layouts_in(entries, str(path))


def eval_layout_hashes(data_dir: str | pathlib.Path | None = None) -> set[str]:
  """The release's 1,000 eval maps' layout hashes (the packaged copy, or ``data_dir``'s): the set training maps
  must never hit."""
  return _layouts_in(release_data.read_maps(release_data.EVAL_FILE, data_dir), release_data.EVAL_FILE)
