"""``python -m vrrl_jax.tasks.grounding --out docs/gallery/grounding``: writes the task's gallery (HTML + PNGs)."""

from __future__ import annotations

import argparse

from vrrl_jax.tasks.grounding import gallery


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m vrrl_jax.tasks.grounding", description=__doc__)
  parser.add_argument("--out", required=True, help="directory for index.html and the PNGs")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  path = gallery.write_gallery(args.out, args.seed)
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
