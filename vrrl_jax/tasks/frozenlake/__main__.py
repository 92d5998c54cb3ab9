"""FrozenLake command line: generate maps, render a gallery, time the renderer.

python -m vrrl_jax.tasks.frozenlake generate --level 5 --n 100 --seed 0 --out maps.jsonl --exclude-eval
python -m vrrl_jax.tasks.frozenlake gallery --out docs/gallery
python -m vrrl_jax.tasks.frozenlake bench --level 7
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

import numpy as np
import tqdm

from vrrl_jax.tasks.frozenlake import generate, maps, render


def _generate(args) -> None:
  exclude: set[str] = set()
  if args.exclude_eval:
    exclude |= generate.eval_layout_hashes(args.data_dir)
  for path in args.exclude:
    exclude |= generate.load_layout_hashes(path)
  specs = generate.generate_maps(
    args.level,
    args.n,
    args.seed,
    min_path_len=args.min_path_len,
    exclude=exclude,
    unique=not args.allow_duplicates,
    progress=args.n >= 1000,
  )
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  with out.open("w") as f:
    for i, spec in enumerate(specs):
      record = {"map_id": f"gen_L{args.level}_seed{args.seed}_{i:06d}", "seed": args.seed, **generate.spec_record(spec)}
      f.write(json.dumps(record) + "\n")
  print(f"wrote {len(specs)} level-{args.level} maps to {out} ({len(exclude)} layouts excluded)")


# ----------------------------------------------------------------------------------------------------
# Gallery: wrong routes built the way a model gets them wrong.


def _manhattan_routes(spec: maps.MapSpec) -> list[list[str]]:
  """The two L-shaped routes that ignore holes (vertical first, horizontal first)."""
  (r0, c0), (r1, c1) = spec.start_rc, spec.target_rc
  vertical = ["down" if r1 > r0 else "up"] * abs(r1 - r0)
  horizontal = ["right" if c1 > c0 else "left"] * abs(c1 - c0)
  return [vertical + horizontal, horizontal + vertical]


def _hole_route(spec: maps.MapSpec) -> list[str] | None:
  for route in _manhattan_routes(spec):
    if any(maps.walk(spec, route).in_hole):
      return route
  return None


def _off_grid_route(spec: maps.MapSpec) -> list[str] | None:
  """A first move off the grid from an edge start, then the optimal route."""
  for move in maps.MOVES:
    if maps.walk(spec, [move]).off_grid[0]:
      return [move, *maps.shortest_path(spec)]
  return None


def _overshoot_off_grid_route(spec: maps.MapSpec) -> list[str] | None:
  """The optimal route, then one more move that leaves the grid past a goal on the edge."""
  best = maps.shortest_path(spec)
  for move in maps.MOVES:
    if maps.walk(spec, [*best, move]).off_grid[-1]:
      return [*best, move]
  return None


_ROUTES = {
  "map": None,
  "correct": maps.shortest_path,
  "hole": _hole_route,
  "offgrid": _off_grid_route,
  "overshoot": _overshoot_off_grid_route,
}
_CAPTIONS = {
  "map": "map only (first-turn image)",
  "correct": "optimal route",
  "hole": "wrong: hole-blind L-shaped route through a hole",
  "offgrid": "wrong: first move off the grid (phantom cell), then the optimal route",
  "overshoot": "wrong: optimal route plus a move off the grid past the goal",
}
# (level, style, route kind): levels 3-7, both styles, correct and wrong routes.
GALLERY = (
  (3, "default", "map"),
  (3, "default", "correct"),
  (4, "default", "hole"),
  (4, "ood", "correct"),
  (5, "default", "offgrid"),
  (5, "ood", "hole"),
  (6, "default", "correct"),
  (6, "ood", "overshoot"),
  (7, "default", "hole"),
  (7, "default", "overshoot"),
  (7, "ood", "map"),
  (7, "ood", "offgrid"),
)


def _gallery(args) -> None:
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  lines = [
    "# FrozenLake render gallery",
    "",
    "Made by `python -m vrrl_jax.tasks.frozenlake gallery --out docs/gallery"
    f"{'' if args.seed == 0 else f' --seed {args.seed}'}` from seeded generated maps"
    " (`vrrl_jax/tasks/frozenlake/render.py`, styles `default` and `ood`).",
    "Routes start at the elf's cell centre, put one vertex per action and end in a star; an off-grid",
    "move adds a phantom cell outside the grid (the canvas grows by that cell) and the elf does not move.",
    "",
  ]
  for k, (level, style, kind) in enumerate(tqdm.tqdm(GALLERY, desc="gallery", unit="img")):
    # Deterministic search: the first seeded map on which this kind of route exists.
    for attempt in range(10_000):
      rng = np.random.default_rng([args.seed, level, attempt])
      spec = generate.generate_map(rng, level, min_path_len=max(2, level - 1))
      route = None if _ROUTES[kind] is None else _ROUTES[kind](spec)
      if kind == "map" or route is not None:
        break
    else:
      raise RuntimeError(f"no level-{level} map found for a {kind!r} route")
    image = render.render_map(spec, style) if route is None else render.render_feedback(spec, route, style)
    name = f"{k + 1:02d}_L{level}_{style}_{kind}.png"
    image.save(out / name, optimize=True)
    title = f"L{level}, {style}: {_CAPTIONS[kind]}"
    lines += [f"## {title}", ""]
    if route is not None:
      lines += [
        f"Route: `{' '.join(route)}` (optimal length {maps.shortest_path_len(spec)}; "
        f"exact match: {maps.is_exact_match(spec, route)})",
        "",
      ]
    lines += [f"![{title}]({name})", ""]
  (out / "README.md").write_text("\n".join(lines))
  total = sum(p.stat().st_size for p in out.glob("*.png"))
  print(f"wrote {len(GALLERY)} images ({total / 1e6:.2f} MB) and README.md to {out}")


def _bench(args) -> None:
  style = render.get_style(args.style)
  specs = generate.generate_maps(args.level, 50, seed=0)
  routes = [[*maps.shortest_path(s), "up", "up", "left"] for s in specs]
  for fn, label in (
    (lambda i: render.render_map(specs[i % 50], style), "render_map"),
    (lambda i: render.render_feedback(specs[i % 50], routes[i % 50], style), "render_feedback"),
  ):
    fn(0)  # sprite tiles
    times = []
    for i in range(args.n):
      t0 = time.perf_counter()
      fn(i)
      times.append(time.perf_counter() - t0)
    print(
      f"{label:16s} level {args.level} style {style.name}: median {1e3 * statistics.median(times):.2f} ms, "
      f"p90 {1e3 * float(np.percentile(times, 90)):.2f} ms over {args.n}"
    )


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
    prog="python -m vrrl_jax.tasks.frozenlake",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  sub = parser.add_subparsers(dest="command", required=True)

  g = sub.add_parser("generate", help="write seeded solvable maps as JSONL (upstream rl_maps.json fields)")
  g.add_argument("--level", type=int, required=True)
  g.add_argument("--n", type=int, required=True)
  g.add_argument("--seed", type=int, required=True)
  g.add_argument("--out", required=True)
  g.add_argument("--min-path-len", type=int, default=generate.DEFAULT_MIN_PATH_LEN)
  g.add_argument("--exclude-eval", action="store_true", help="never emit a layout of the release's eval maps")
  g.add_argument("--data-dir", default=None, help="a directory with the release's map files (default: packaged)")
  g.add_argument("--exclude", action="append", default=[], help="JSON/JSONL map file whose layouts to avoid")
  g.add_argument("--allow-duplicates", action="store_true", help="allow repeated layouts within the output")
  g.set_defaults(fn=_generate)

  gal = sub.add_parser("gallery", help="render maps and feedback routes in both styles to a folder")
  gal.add_argument("--out", required=True)
  gal.add_argument("--seed", type=int, default=0)
  gal.set_defaults(fn=_gallery)

  b = sub.add_parser("bench", help="time render_map and render_feedback")
  b.add_argument("--level", type=int, default=7)
  b.add_argument("--n", type=int, default=200)
  b.add_argument("--style", default="default")
  b.set_defaults(fn=_bench)

  args = parser.parse_args(argv)
  try:
    args.fn(args)
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  main()
