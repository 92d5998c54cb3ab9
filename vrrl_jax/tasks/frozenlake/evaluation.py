"""Evaluation metrics for FrozenLake episodes (VRRL_SPEC section 5), per level and split.

Definitions follow upstream's eval script (``api_inference_frozenlake.py``):

- committed route: the ``<FINAL>`` actions, else the last parseable route (an episode that hit the turn
  limit commits its last route); none if the episode never produced a parseable route;
- ``strict``: executing the committed route reaches the gift with no off-grid move and no hole before it
  (moves after the gift are not executed, as in gym's FrozenLake, where the episode ends there);
- ``lenient``: the walk visits the gift at some point before falling into a hole (off-grid moves are no-ops);
- ``optimal`` (the headline ``optimal_rate``): strict and exactly the BFS-shortest length, i.e. EM;
- ``turn1_*``: the same for the first turn's route; ``avg_turns``, ``format_error_rate``, ``max_turns_rate``,
  ``token_budget_rate`` (the sequence's token budget ran out first), ``clean_final_rate`` from the finish reason.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

from vrrl_jax.tasks.frozenlake import maps, parse, protocol

TOKEN_BUDGET = "length"  # the rollout's finish reason when the sequence budget ran out before the episode ended
FINISH_REASONS = protocol.DONE_REASONS + (TOKEN_BUDGET,)
IN_DISTRIBUTION_LEVELS = (3, 4, 5)
OUT_OF_DISTRIBUTION_LEVELS = (6, 7)


@dataclasses.dataclass(frozen=True)
class EpisodeRecord:
  map_id: str
  level: int
  n_turns: int
  n_routes: int
  finish_reason: str
  committed: tuple[str, ...] | None
  first: tuple[str, ...] | None
  strict: bool
  lenient: bool
  optimal: bool
  turn1_strict: bool
  turn1_optimal: bool


def route_outcome(spec: maps.MapSpec, actions: Sequence[str] | None, n_opt: int | None) -> tuple[bool, bool, bool]:
  """(strict, lenient, optimal) of one action list."""
  if actions is None or n_opt is None:
    return False, False, False
  level, (r, c), goal = spec.level, spec.start_rc, spec.target_rc
  strict, lenient, illegal = False, False, False
  for a in actions:
    dr, dc = maps.MOVES[a]
    nr, nc = r + dr, c + dc
    if not (0 <= nr < level and 0 <= nc < level):
      illegal = True
      continue
    r, c = nr, nc
    if spec.is_hole(r, c):
      break
    if (r, c) == goal:
      lenient = True
      strict = not illegal
      break
  optimal = strict and len(actions) == n_opt and maps.is_exact_match(spec, actions, n_opt)
  return strict, lenient, optimal


def episode_record(map_id: str, spec: maps.MapSpec, turns: Sequence[str], finish_reason: str) -> EpisodeRecord:
  if finish_reason not in FINISH_REASONS:
    raise ValueError(f"finish_reason must be one of {FINISH_REASONS}, got {finish_reason!r}")
  parsed = [parse.parse_turn(t) for t in turns]
  routes = [p.actions for p in parsed if p.ok and p.is_route]
  committed = None
  for p in parsed:
    if p.ok and p.is_final:
      committed = p.actions
  if committed is None and routes:
    committed = routes[-1]
  first = parsed[0].actions if parsed and parsed[0].ok else None
  n_opt = maps.shortest_path_len(spec)
  strict, lenient, optimal = route_outcome(spec, committed, n_opt)
  t1_strict, _, t1_optimal = route_outcome(spec, first, n_opt)
  return EpisodeRecord(
    map_id,
    spec.level,
    len(turns),
    len(routes),
    finish_reason,
    committed,
    first,
    strict,
    lenient,
    optimal,
    t1_strict,
    t1_optimal,
  )


def summarize(records: Sequence[EpisodeRecord]) -> dict[str, float]:
  n = len(records)
  if n == 0:
    raise ValueError("no episodes to summarize")

  def rate(pred) -> float:
    return sum(1 for r in records if pred(r)) / n

  strict = rate(lambda r: r.strict)
  turn1 = rate(lambda r: r.turn1_strict)
  return {
    "n": n,
    "optimal_rate": rate(lambda r: r.optimal),
    "strict_success_rate": strict,
    "lenient_success_rate": rate(lambda r: r.lenient),
    "turn1_strict_rate": turn1,
    "turn1_optimal_rate": rate(lambda r: r.turn1_optimal),
    "final_strict_rate": strict,
    "turn1_to_final_delta": strict - turn1,
    "avg_turns": sum(r.n_turns for r in records) / n,
    "avg_routes": sum(r.n_routes for r in records) / n,
    "format_error_rate": rate(lambda r: r.finish_reason == protocol.FORMAT_ERROR),
    "max_turns_rate": rate(lambda r: r.finish_reason == protocol.MAX_TURNS),
    "token_budget_rate": rate(lambda r: r.finish_reason == TOKEN_BUDGET),
    "clean_final_rate": rate(lambda r: r.finish_reason == protocol.FINAL),
  }


def aggregate(records: Iterable[EpisodeRecord]) -> dict:
  """Per-level summaries plus in-distribution (L3-5), out-of-distribution (L6-7) and overall, each also as
  the unweighted mean of its levels' optimal_rate (how the paper averages)."""
  records = list(records)
  by_level = {}
  for level in sorted({r.level for r in records}):
    by_level[f"L{level}"] = summarize([r for r in records if r.level == level])
  out = {"by_level": by_level, "overall": summarize(records)}
  for name, levels in (
    ("in_distribution", IN_DISTRIBUTION_LEVELS),
    ("out_of_distribution", OUT_OF_DISTRIBUTION_LEVELS),
  ):
    present = [f"L{lv}" for lv in levels if f"L{lv}" in by_level]
    if present:
      out[name] = {
        "levels": present,
        "optimal_rate": sum(by_level[k]["optimal_rate"] for k in present) / len(present),
        "strict_success_rate": sum(by_level[k]["strict_success_rate"] for k in present) / len(present),
      }
  return out
