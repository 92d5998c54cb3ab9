"""Compile time of the jitted forward against depth, with and without ``scan_layers``: scanned, the program (and so
its compile time) should stay flat as layers are added; unrolled, it grows with them. Qwen3-VL's DeepStack taps are
the part that could break that (they are written into a carried buffer inside the scan).

  python bench/compile_vs_depth.py --family qwen3_vl

Prints ONE JSON line: compile seconds per (scan_layers, depth), depth applied to both the decoder and the vision
tower of the tests' tiny config (random weights; compile time does not depend on them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import time

import jax
import numpy as np

from vrrl_jax.models import families

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import qwen_tiny  # noqa: E402


def compile_seconds(family: str, depth: int, scan: bool) -> float:
  raw = qwen_tiny.tiny_config_dict(family=family)
  raw["text_config"]["num_hidden_layers"] = depth
  raw["vision_config"]["depth"] = depth
  if family == "qwen3_vl":
    raw["vision_config"]["deepstack_visual_indexes"] = [0, depth // 2, depth - 1]
  else:
    raw["vision_config"]["fullatt_block_indexes"] = [depth // 2, depth - 1]
  config = families.config_from_hf(raw, scan_layers=scan)
  shapes, _ = families.abstract_params(config)
  rng = np.random.default_rng(0)
  grids = [(1, 8, 8)]
  ids, mask = qwen_tiny.left_pad([qwen_tiny.make_row(rng, [20, grids[0], 20])])
  inputs, _ = families.prepare_inputs(config, ids, mask, qwen_tiny.random_pixels(grids, rng, family), np.array(grids))
  model = families.build(config)
  forward = jax.jit(lambda p, x: model.apply({"params": p}, x, method="forward").logits)
  start = time.perf_counter()
  forward.lower(shapes, inputs).compile()
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--family", default="qwen3_vl", choices=families.MODEL_TYPES)
  parser.add_argument("--depths", default="4,8,16")
  args = parser.parse_args()
  depths = [int(d) for d in args.depths.split(",")]
  results = {
    f"{'scan' if scan else 'unrolled'}_depth{d}": round(compile_seconds(args.family, d, scan), 2)
    for scan in (True, False)
    for d in depths
  }
  print(
    json.dumps(
      dict(
        date=datetime.date.today().isoformat(),
        bench="compile_vs_depth",
        family=args.family,
        machine=platform.processor() or platform.machine(),
        cpus=os.cpu_count(),
        jax=jax.__version__,
        compile_s=results,
      )
    )
  )


if __name__ == "__main__":
  main()
