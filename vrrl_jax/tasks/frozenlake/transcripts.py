"""Synthetic multi-turn reflection transcripts for the SFT warm start (VRRL_SPEC sections 1, 2, 5).

Upstream warm-starts its released checkpoints with multi-turn SFT but does not release that data, so we
write it: for one map, a transcript in the reflection protocol that the reward scores at its maximum
for the case (format gate 0.1 and an exact-match commit). Two shapes:

- correct first: ``<ANSWER>optimal</ANSWER>`` then ``<FINAL>optimal</FINAL>``;
- 1..``max_wrong_routes`` wrong routes, each followed by a revision
  ``<THINK>what the feedback image shows</THINK><ANSWER>next route</ANSWER>``, the last revision an
  optimal route, then ``<FINAL>`` repeating it.

A wrong route makes exactly one kind of mistake, so the THINK sentence that names it is true:

- ``off_grid``: a move leaves the grid (no hole anywhere) -- "The route leaves the grid at step k.";
- ``hole``: a move lands in an ice hole (no off-grid move) -- "The path crosses an ice hole at step k.";
- ``too_long``: legal, ends on the gift, more moves than the optimum (a detour through a waypoint, a
  back-and-forth step, or an overshoot past the gift and back) -- "The path reaches the gift but takes
  n moves; a shorter route exists.";
- ``short``: a strict, non-empty prefix of an optimal route -- "The path ends before the gift.".

``k`` is the 1-based index of the first offending move. Not every map admits every kind (``short``
needs an optimum of at least 2 moves; ``hole``/``off_grid`` need a hole/border cell next to the area
the elf can reach within the length cap). When kinds are drawn from the mix, the kinds a map cannot
produce are left out and the remaining weights renormalised (and if no kind can give a route distinct
from the earlier wrong ones, the transcript stops adding wrong routes); ``Transcript.wrong_kinds``
records what was used. Kinds asked for explicitly raise ``ValueError`` when the map cannot produce them.

Every transcript is played through ``protocol.Episode`` while it is built: the feedback images are the
ones the environment shows, and a transcript that does not end with reason ``"final"`` is a bug (raises).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from vrrl_jax.tasks.frozenlake import maps, parse, protocol, render

OFF_GRID = "off_grid"
HOLE = "hole"
TOO_LONG = "too_long"
SHORT = "short"
WRONG_KINDS = (OFF_GRID, HOLE, TOO_LONG, SHORT)
OPTIMAL = "optimal"
OTHER = "other"  # off-grid and hole together, or legal, off the gift and not an optimal prefix

# Fresh draws per kind before a kind counts as unable to give a route distinct from the earlier ones.
_DISTINCT_TRIES = 32

_OPPOSITE = {"up": "down", "down": "up", "left": "right", "right": "left"}

# Second THINK sentence: what the revision will do. The first sentence (what the image shows) is fixed.
_PLANS = {
  OFF_GRID: ("Every move has to stay inside the grid.", "I need a route that stays on the grid."),
  HOLE: ("I need to go around the hole.", "The route has to avoid the ice holes."),
  TOO_LONG: ("I will take the direct way instead.", "Dropping the detour gives a shorter route."),
  SHORT: ("The route needs more moves to reach the gift.", "I need to continue until the gift."),
}


@dataclasses.dataclass(frozen=True)
class TranscriptConfig:
  """The mix of transcript shapes and the length limits of wrong routes; validated on creation.

  ``p_correct_first``: chance the first route is already optimal. Otherwise there is one wrong route,
  and each further one (up to ``max_wrong_routes``) follows with chance ``p_another_wrong``.
  ``weight_*``: relative frequency of each wrong kind. A wrong route is at most ``max_extra_moves``
  longer than the optimum; ``too_long`` routes are 2..``max_extra_moves`` longer (always an even
  number: every route between two cells has the parity of their distance). ``p_continue_after_mistake``:
  chance an off-grid/hole route carries on to the gift after the mistake instead of stopping there.
  ``max_turns``: the episode's turn budget the transcript must fit (``max_wrong_routes + 2`` turns at
  most). ``style``: the render style of the images.
  """

  p_correct_first: float = 0.3
  weight_off_grid: float = 0.2
  weight_hole: float = 0.35
  weight_too_long: float = 0.2
  weight_short: float = 0.25
  p_another_wrong: float = 0.25
  max_wrong_routes: int = 2
  max_extra_moves: int = 4
  p_continue_after_mistake: float = 0.5
  max_turns: int = protocol.TRAIN_MAX_TURNS
  style: str = "default"

  def __post_init__(self):
    for name in ("p_correct_first", "p_another_wrong", "p_continue_after_mistake"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    for kind in WRONG_KINDS:
      value = getattr(self, f"weight_{kind}")
      if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"weight_{kind} must be a finite number >= 0, got {value!r}")
    if self.p_correct_first < 1.0 and sum(self.weights.values()) <= 0.0:
      raise ValueError("all weight_* are 0 but p_correct_first < 1: wrong routes need at least one kind")
    for name, lo in (("max_wrong_routes", 1), ("max_extra_moves", 2), ("max_turns", 3)):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    if self.max_wrong_routes + 2 > self.max_turns:
      raise ValueError(
        f"max_wrong_routes={self.max_wrong_routes} needs {self.max_wrong_routes + 2} turns "
        f"(wrong routes + the corrected route + FINAL), more than max_turns={self.max_turns}"
      )
    render.get_style(self.style)

  @property
  def weights(self) -> dict[str, float]:
    return {kind: float(getattr(self, f"weight_{kind}")) for kind in WRONG_KINDS}

  @classmethod
  def from_mapping(cls, options: Mapping[str, Any]) -> "TranscriptConfig":
    """From a plain mapping or ``ml_collections.ConfigDict``; unknown keys raise ValueError."""
    options = {k: options[k] for k in options.keys()}
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"unknown transcript option(s) {unknown}")
    return cls(**options)


@dataclasses.dataclass(frozen=True)
class Transcript:
  """One synthetic episode. ``feedback_images[i]`` is the image the environment shows after
  ``turns[i]`` (every turn but the last, the ``<FINAL>``, gets one)."""

  spec: maps.MapSpec
  turns: tuple[str, ...]
  routes: tuple[tuple[str, ...], ...]
  wrong_kinds: tuple[str, ...]
  map_image: Image.Image
  feedback_images: tuple[Image.Image, ...]
  style: str

  @property
  def n_revisions(self) -> int:
    return len(self.routes) - 1


# ----------------------------------------------------------------------------------------------------
# Grid helpers. Cells are (row, col); distances are BFS over non-hole cells (-1 where unreachable).


def _neighbours(spec: maps.MapSpec, rc: tuple[int, int]):
  level = spec.level
  for name, (dr, dc) in maps.MOVES.items():
    r, c = rc[0] + dr, rc[1] + dc
    yield name, (r, c), 0 <= r < level and 0 <= c < level


def _distances_to(spec: maps.MapSpec, target: tuple[int, int]) -> np.ndarray:
  """BFS distance from every cell to ``target`` (symmetric moves, so also from ``target``)."""
  if target == spec.target_rc:
    return maps.distance_map(spec)
  level = spec.level
  dist = np.full((level, level), maps.UNREACHABLE, dtype=np.int32)
  dist[target] = 0
  frontier = [target]
  while frontier:
    nxt = []
    for rc in frontier:
      for _, (r, c), inside in _neighbours(spec, rc):
        if inside and dist[r, c] == maps.UNREACHABLE and not spec.is_hole(r, c):
          dist[r, c] = dist[rc] + 1
          nxt.append((r, c))
    frontier = nxt
  return dist


def _random_descent(
  spec: maps.MapSpec, dist: np.ndarray, start: tuple[int, int], rng: np.random.Generator
) -> list[str]:
  """A uniformly-tied shortest route from ``start`` down ``dist`` to its zero cell."""
  actions, rc = [], start
  while dist[rc] > 0:
    options = [(name, cell) for name, cell, inside in _neighbours(spec, rc) if inside and dist[cell] == dist[rc] - 1]
    name, rc = options[int(rng.integers(len(options)))]
    actions.append(name)
  return actions


def random_optimal_route(spec, rng: np.random.Generator) -> tuple[str, ...]:
  """One shortest route, ties broken at random (so transcripts do not always prefer ``up``)."""
  spec = maps.parse_spec(spec, require_reachable=True)
  return tuple(_random_descent(spec, maps.distance_map(spec), spec.start_rc, rng))


# ----------------------------------------------------------------------------------------------------
# What a route does wrong, and the THINK sentence that names it.


def classify_route(spec, actions: Sequence[str]) -> str:
  """``OPTIMAL``, one of ``WRONG_KINDS``, or ``OTHER`` (off-grid and hole together, or a legal route
  that wanders off without reaching the gift): the kinds a single THINK sentence can name."""
  spec = maps.parse_spec(spec, require_reachable=True)
  actions = tuple(actions)
  if maps.is_exact_match(spec, actions):
    return OPTIMAL
  trace = maps.walk(spec, actions)
  off, hole = any(trace.off_grid), any(trace.in_hole)
  if off and hole:
    return OTHER
  if off:
    return OFF_GRID
  if hole:
    return HOLE
  end = trace.elf[-1] if actions else spec.start_rc
  if end == spec.target_rc:
    return TOO_LONG  # legal, on the gift, not EM: longer than the optimum
  dist = maps.distance_map(spec)
  cells = [spec.start_rc, *trace.elf]
  if actions and all(dist[b] == dist[a] - 1 for a, b in zip(cells, cells[1:])):
    return SHORT
  return OTHER


def describe_mistake(spec, actions: Sequence[str]) -> str:
  """The sentence naming what the feedback image of a wrong route shows. Raises for other routes."""
  spec = maps.parse_spec(spec, require_reachable=True)
  actions = tuple(actions)
  kind = classify_route(spec, actions)
  trace = maps.walk(spec, actions)
  if kind == OFF_GRID:
    return f"The route leaves the grid at step {trace.off_grid.index(True) + 1}."
  if kind == HOLE:
    return f"The path crosses an ice hole at step {trace.in_hole.index(True) + 1}."
  if kind == TOO_LONG:
    return f"The path reaches the gift but takes {len(actions)} moves; a shorter route exists."
  if kind == SHORT:
    return "The path ends before the gift."
  raise ValueError(f"route {parse.format_actions(actions)!r} is {kind}, not one of {WRONG_KINDS}")


# ----------------------------------------------------------------------------------------------------
# Wrong routes of one kind. Each returns a list of "recipes" (a way to build a candidate); a route is
# one recipe drawn at random and completed with random shortest sub-routes.


class _MapFacts:
  """Per-map quantities shared by the generators (goal distances, reachable cells, the optimum)."""

  def __init__(self, spec: maps.MapSpec, config: TranscriptConfig):
    self.spec = spec
    self.goal_dist = maps.distance_map(spec)
    self.n_opt = int(self.goal_dist[spec.start_rc])
    self.start_dist = _distances_to(spec, spec.start_rc)
    self.max_len = self.n_opt + config.max_extra_moves
    self.max_extra = config.max_extra_moves
    self.p_continue = config.p_continue_after_mistake
    level = spec.level
    self.reachable = [(r, c) for r in range(level) for c in range(level) if self.start_dist[r, c] >= 0]

  def path(self, src: tuple[int, int], dst: tuple[int, int], rng) -> list[str]:
    dist = self.goal_dist if dst == self.spec.target_rc else _distances_to(self.spec, dst)
    return _random_descent(self.spec, dist, src, rng)


def _mistake_recipes(m: _MapFacts, want_hole: bool) -> list[tuple[tuple[int, int], str, tuple[int, int]]]:
  """(reachable cell X, move, cell it leads to) where the move goes off-grid / into a hole and the
  shortest such route still fits the length cap."""
  out = []
  for x in m.reachable:
    for name, cell, inside in _neighbours(m.spec, x):
      bad = (inside and m.spec.is_hole(*cell)) if want_hole else not inside
      if bad and m.start_dist[x] + 1 <= m.max_len:
        out.append((x, name, cell))
  return out


def _mistake_route(m: _MapFacts, recipe, rng) -> list[str]:
  x, name, cell = recipe
  route = m.path(m.spec.start_rc, x, rng) + [name]
  if rng.random() < m.p_continue:
    # Carry on to the gift from where the elf now is: still on x after an off-grid move (the elf
    # does not move), in the hole after a hole move (the walk does not stop there).
    if not (0 <= cell[0] < m.spec.level and 0 <= cell[1] < m.spec.level):
      rest = m.path(x, m.spec.target_rc, rng)
    else:  # out of the hole through its closest non-hole neighbour
      steps = [
        (int(m.goal_dist[c]), n, c) for n, c, inside in _neighbours(m.spec, cell) if inside and m.goal_dist[c] >= 0
      ]
      best = min(s[0] for s in steps)
      ties = [s for s in steps if s[0] == best]
      _, n, c = ties[int(rng.integers(len(ties)))]
      rest = [n] + m.path(c, m.spec.target_rc, rng)
    if len(route) + len(rest) <= m.max_len:
      route += rest
  return route


def _too_long_recipes(m: _MapFacts) -> list[tuple[str, Any]]:
  """Waypoints whose shortest detour is 2..max_extra longer, plus a back-and-forth step on an
  optimal route (always possible: step back along the route and forward again)."""
  out: list[tuple[str, Any]] = []
  for x in m.reachable:
    extra = int(m.start_dist[x] + m.goal_dist[x]) - m.n_opt
    if 2 <= extra <= m.max_extra:
      out.append(("waypoint", x))
  out.append(("back_and_forth", None))
  return out


def _too_long_route(m: _MapFacts, recipe, rng) -> list[str]:
  how, x = recipe
  if how == "waypoint":  # the S->x leg may pass the gift: then it overshoots and comes back
    return m.path(m.spec.start_rc, x, rng) + m.path(x, m.spec.target_rc, rng)
  route = m.path(m.spec.start_rc, m.spec.target_rc, rng)
  cells = [m.spec.start_rc, *maps.walk(m.spec, route).elf]
  options = []
  for i, rc in enumerate(cells):  # insert (move, opposite move) at cell i
    for name, cell, inside in _neighbours(m.spec, rc):
      if inside and not m.spec.is_hole(*cell):
        options.append((i, name))
  i, name = options[int(rng.integers(len(options)))]
  return route[:i] + [name, _OPPOSITE[name]] + route[i:]


def _short_route(m: _MapFacts, rng) -> list[str]:
  route = m.path(m.spec.start_rc, m.spec.target_rc, rng)
  return route[: int(rng.integers(1, m.n_opt))]


def _recipes(m: _MapFacts, kind: str) -> list:
  if kind == SHORT:
    return [None] if m.n_opt >= 2 else []
  if kind == TOO_LONG:
    return _too_long_recipes(m)
  if kind in (OFF_GRID, HOLE):
    return _mistake_recipes(m, want_hole=kind == HOLE)
  raise ValueError(f"unknown wrong-route kind {kind!r}; expected one of {WRONG_KINDS}")


def _build(m: _MapFacts, kind: str, recipe, rng) -> list[str]:
  if kind == SHORT:
    return _short_route(m, rng)
  if kind == TOO_LONG:
    return _too_long_route(m, recipe, rng)
  return _mistake_route(m, recipe, rng)


def _draw_wrong_route(
  m: _MapFacts, kind: str, rng: np.random.Generator, exclude: set[tuple[str, ...]]
) -> tuple[str, ...] | None:
  """A route of ``kind`` not in ``exclude``, or None when the map cannot give one."""
  recipes = _recipes(m, kind)
  if not recipes:
    return None
  for _ in range(_DISTINCT_TRIES):
    route = tuple(_build(m, kind, recipes[int(rng.integers(len(recipes)))], rng))
    if route not in exclude:
      got = classify_route(m.spec, route)
      if got != kind:  # the generators guarantee the kind; anything else is a bug here
        raise AssertionError(f"generated a {got} route {route} while asked for {kind}")
      return route
  return None


def wrong_route(
  spec,
  kind: str,
  rng: np.random.Generator,
  config: TranscriptConfig = TranscriptConfig(),
  exclude: Iterable[Sequence[str]] = (),
) -> tuple[str, ...]:
  """One wrong route of ``kind`` not in ``exclude``; ValueError when the map cannot give one."""
  spec = maps.parse_spec(spec, require_reachable=True)
  if kind not in WRONG_KINDS:
    raise ValueError(f"unknown wrong-route kind {kind!r}; expected one of {WRONG_KINDS}")
  exclude = {tuple(e) for e in exclude}
  route = _draw_wrong_route(_MapFacts(spec, config), kind, rng, exclude)
  if route is None:
    raise ValueError(
      f"this map ({spec.layout}, start {spec.start_pos}, goal {spec.target_pos}) cannot give a "
      f"{kind} route distinct from the {len(exclude)} excluded within "
      f"max_extra_moves={config.max_extra_moves}"
    )
  return route


# ----------------------------------------------------------------------------------------------------
# Transcripts.


def _draw_wrong_kinds_and_routes(m: _MapFacts, rng, config: TranscriptConfig):
  if rng.random() < config.p_correct_first:
    return [], []
  n_wrong = 1
  while n_wrong < config.max_wrong_routes and rng.random() < config.p_another_wrong:
    n_wrong += 1
  kinds, routes = [], []
  for _ in range(n_wrong):
    weights = {k: w for k, w in config.weights.items() if w > 0}
    route = None
    while weights and route is None:
      names = list(weights)
      p = np.array([weights[k] for k in names]) / sum(weights.values())
      kind = names[int(rng.choice(len(names), p=p))]
      route = _draw_wrong_route(m, kind, rng, set(routes))
      if route is None:
        del weights[kind]  # this map cannot give that kind (any more): renormalise over the rest
    if route is None:
      break
    kinds.append(kind)
    routes.append(route)
  if not routes:
    raise ValueError(
      f"no wrong-route kind with positive weight fits this map ({m.spec.layout}, start "
      f"{m.spec.start_pos}, goal {m.spec.target_pos}); weights {config.weights}"
    )
  return kinds, routes


def _think(spec: maps.MapSpec, kind: str, route: Sequence[str], rng) -> str:
  plans = _PLANS[kind]
  return f"{describe_mistake(spec, route)} {plans[int(rng.integers(len(plans)))]}"


def make_transcript(
  spec,
  rng: np.random.Generator,
  config: TranscriptConfig = TranscriptConfig(),
  *,
  wrong_kinds: Sequence[str] | None = None,
) -> Transcript:
  """One transcript for ``spec``; its shape is drawn from ``config`` unless ``wrong_kinds`` fixes it
  (``()`` for correct-first, else the kinds of the wrong routes in order)."""
  if not isinstance(rng, np.random.Generator):
    raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
  if not isinstance(config, TranscriptConfig):
    raise TypeError(f"config must be a TranscriptConfig, got {type(config).__name__}")
  spec = maps.parse_spec(spec, require_reachable=True)
  m = _MapFacts(spec, config)
  if wrong_kinds is None:
    kinds, wrong = _draw_wrong_kinds_and_routes(m, rng, config)
  else:
    kinds = [str(k) for k in wrong_kinds]
    if len(kinds) > config.max_turns - 2:
      raise ValueError(f"{len(kinds)} wrong routes need {len(kinds) + 2} turns, more than max_turns={config.max_turns}")
    wrong = []
    for kind in kinds:
      wrong.append(wrong_route(spec, kind, rng, config, exclude=wrong))
  best = random_optimal_route(spec, rng)

  routes = [*wrong, best]
  texts = [f"<ANSWER>{parse.format_actions(routes[0])}</ANSWER>"]
  for kind, prev, route in zip(kinds, wrong, routes[1:]):
    texts.append(f"<THINK>{_think(spec, kind, prev, rng)}</THINK><ANSWER>{parse.format_actions(route)}</ANSWER>")
  texts.append(f"<FINAL>{parse.format_actions(best)}</FINAL>")

  episode = protocol.Episode(spec, max_turns=config.max_turns, style=config.style)
  images = []
  for text in texts:
    step = episode.step(text)
    if step.feedback_image is not None:
      images.append(step.feedback_image)
  if episode.reason != protocol.FINAL or len(episode.turns) != len(texts) or len(images) != len(texts) - 1:
    raise AssertionError(
      f"synthetic transcript ended with {episode.reason!r} after {len(episode.turns)} of {len(texts)} turns: {texts}"
    )
  return Transcript(spec, tuple(texts), tuple(routes), tuple(kinds), episode.images[0], tuple(images), config.style)


def make_transcripts(specs: Iterable, seed: int, config: TranscriptConfig = TranscriptConfig()) -> list[Transcript]:
  """One transcript per spec, from one seeded stream (same seed and specs -> same transcripts)."""
  rng = np.random.default_rng(seed)
  return [make_transcript(spec, rng, config) for spec in specs]


def to_messages(transcript: Transcript) -> list[dict[str, Any]]:
  """The training conversation (HF message format, images inline): the map image and the task
  prompt in the first user turn, as upstream's training jinja; then each assistant turn, each but the
  last followed by a user turn with its feedback image and ``FEEDBACK_TEXT``."""
  messages = [
    {
      "role": "user",
      "content": [{"type": "image", "image": transcript.map_image}, {"type": "text", "text": protocol.TASK_PROMPT}],
    }
  ]
  for i, text in enumerate(transcript.turns):
    messages.append({"role": "assistant", "content": text})
    if i < len(transcript.feedback_images):
      messages.append(
        {
          "role": "user",
          "content": [
            {"type": "image", "image": transcript.feedback_images[i]},
            {"type": "text", "text": protocol.FEEDBACK_TEXT},
          ],
        }
      )
  return messages
