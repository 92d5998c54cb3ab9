"""``python -m vrrl_jax.tasks.vigorl --out docs/gallery/vigorl``: writes the task's gallery (HTML + PNGs)."""

from __future__ import annotations

import argparse

from vrrl_jax.tasks.vigorl import gallery


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m vrrl_jax.tasks.vigorl", description=__doc__)
  parser.add_argument("--out", required=True, help="directory for index.html and the PNGs")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  print(f"wrote {gallery.write_gallery(args.out, args.seed)}")


if __name__ == "__main__":
  main()
