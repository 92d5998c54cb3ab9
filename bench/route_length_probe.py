"""Do greedy routes stop at the gift? Route length against the shortest route's, from evals' ``episodes.jsonl``.

A route can reach the gift and still miss ``optimal``: it walks on past it. This probe measures that, per eval:
for the first and the final route of every episode on the release maps of ``--levels``, the count of
``len(route) - shortest`` values, and the share of routes that pass over the gift and keep going (``overshoot``:
the elf stands on the gift before the route's last move). Prints ONE JSON line.

  python bench/route_length_probe.py W0/eval_after_rl W1/eval_after_rl     # two warm starts side by side
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
from collections.abc import Iterable, Mapping

from vrrl_jax.tasks.frozenlake import data, maps


def release_specs(levels: Iterable[int]) -> dict[tuple[int, str], maps.MapSpec]:
  """(level, map_id) -> spec of the packaged release eval maps (the maps the eval uses for L3-L6)."""
  cfg = data.FrozenLakeDataConfig()
  return {(spec.level, mid): spec for lvl in levels for mid, spec, _ in data.iter_specs(f"eval_L{lvl}", cfg)}


def passes_over_goal(spec: maps.MapSpec, route: list[str]) -> bool:
  """The elf stands on the gift before the last move, with no hole or off-grid move before it."""
  w = maps.walk(spec, route)
  for i in range(len(route) - 1):
    if w.off_grid[i] or w.in_hole[i]:
      return False
    if w.elf[i] == spec.target_rc:
      return True
  return False


def length_profile(records: Iterable[Mapping], specs: Mapping[tuple[int, str], maps.MapSpec]) -> dict:
  """For the ``first`` and ``committed`` route of each record whose map is in ``specs``: counts of
  ``len - shortest`` and the overshoot share (of the routes present; a malformed turn has none)."""
  out = {"n": 0}
  counts = {"first": collections.Counter(), "final": collections.Counter()}
  over = {"first": 0, "final": 0}
  for r in records:
    spec = specs.get((r["level"], r["map_id"]))
    if spec is None:
      continue
    out["n"] += 1
    shortest = maps.shortest_path_len(spec)
    for name, key in (("first", "first"), ("final", "committed")):
      route = r[key]
      if route is None:
        continue
      counts[name][len(route) - shortest] += 1
      over[name] += passes_over_goal(spec, route)
  for name in ("first", "final"):
    n = sum(counts[name].values())
    out[name] = {
      "routes": n,
      "length_minus_shortest": {str(k): v for k, v in sorted(counts[name].items())},
      "too_long": round(sum(v for k, v in counts[name].items() if k > 0) / max(n, 1), 4),
      "too_short": round(sum(v for k, v in counts[name].items() if k < 0) / max(n, 1), 4),
      "overshoot": round(over[name] / max(n, 1), 4),
    }
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("eval_dirs", nargs="+", help="eval directories holding episodes.jsonl")
  parser.add_argument("--levels", default="3,4,5", help="release eval levels (3-6)")
  args = parser.parse_args(argv)
  levels = [int(x) for x in args.levels.split(",") if x]
  if not set(levels) <= {3, 4, 5, 6}:
    raise SystemExit(f"--levels={args.levels}: release eval maps exist for levels 3-6 only")
  specs = release_specs(levels)
  line = {"bench": "route_length_probe", "levels": levels}
  for d in args.eval_dirs:
    path = pathlib.Path(d) / "episodes.jsonl"
    if not path.is_file():
      raise SystemExit(f"{path}: no such file (an eval directory written by vrrl_jax.eval or a training run)")
    records = [json.loads(s)["record"] for s in path.read_text().splitlines()]
    line[d] = length_profile(records, specs)
  print(json.dumps(line))


if __name__ == "__main__":
  main()
