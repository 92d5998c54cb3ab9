r"""Does the training reward rise over RL? Per run and pooled over runs, for the issue's test (least-squares slope of
the per-step reward, p < 0.05).

  python bench/reward_slopes.py --out R.json W1 W2 ...   # each W a training workdir with metrics.jsonl

Why pooled: one run's 40 RL steps give a slope whose standard error (about 1e-3 per step at these reward spreads) can
be larger than the slope itself. Runs are pooled by inverse-variance weighting (a fixed-effect mean of the slopes)
and by a sign test, and the script reports how many steps one run would need for the pooled slope to reach z = 2 at
the runs' median residual spread (a slope's standard error falls as steps^-1.5). Three rewards:
``reward/overall`` (every row the step trained on) and, where the run logs them, ``reward_random_start/overall``
(rows started from a masked turn of a fresh episode) and ``reward_prefix_buffer/overall`` (VRRL's buffered roll-ins:
rows started from prefixes the buffer holds, whose mix changes as training goes, so the overall reward of a run that
uses them is not a fixed measure).
Prints one JSON line; ``--out`` writes it to a file too.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

import numpy as np
from scipy import stats as scipy_stats

KEYS = ("reward/overall", "reward_random_start/overall", "reward_prefix_buffer/overall")


def rl_rows(workdir: pathlib.Path) -> list[dict]:
  """The RL steps' records (they carry a policy-gradient loss), in step order."""
  path = workdir / "metrics.jsonl"
  if not path.is_file():
    raise SystemExit(f"{workdir}: no metrics.jsonl (is it a training workdir?)")
  rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return sorted((r for r in rows if "loss/pg_loss" in r), key=lambda r: r["step"])


def slope(rows: list[dict], key: str) -> dict | None:
  """Least-squares slope of ``key`` against the step, its standard error, p and residual spread; None if < 5 steps."""
  points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
  if len(points) < 5:
    return None
  x, y = (np.array(v, np.float64) for v in zip(*points))
  fit = scipy_stats.linregress(x, y)
  resid = y - (fit.intercept + fit.slope * x)
  return {
    "n": len(x),
    "slope": float(fit.slope),
    "se": float(fit.stderr),
    "p": float(fit.pvalue),
    "resid_sd": float(resid.std(ddof=2)),
    "first10": float(y[:10].mean()),
    "last10": float(y[-10:].mean()),
  }


def pooled(fits: list[dict]) -> dict:
  """Fixed-effect (inverse-variance) mean slope over runs, a two-sided sign test, and the steps one run would need."""
  s = np.array([f["slope"] for f in fits])
  w = 1.0 / np.array([f["se"] for f in fits]) ** 2
  mean, se = float((w * s).sum() / w.sum()), float(1.0 / math.sqrt(w.sum()))
  positive = int((s > 0).sum())
  out = {
    "runs": len(fits),
    "slope": mean,
    "se": se,
    "z": mean / se,
    "p": float(2 * scipy_stats.norm.sf(abs(mean / se))),
    "positive": positive,
    "sign_test_p": float(scipy_stats.binomtest(positive, len(fits)).pvalue),
  }
  if mean > 0:
    # se(slope) = sd / sqrt(sum (x - mean x)^2) ~= sd * sqrt(12) / n^1.5 for n equally spaced steps.
    sd = float(np.median([f["resid_sd"] for f in fits]))
    out["steps_for_z2_one_run"] = math.ceil((2.0 * sd * math.sqrt(12.0) / mean) ** (2.0 / 3.0))
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdirs", nargs="+", type=pathlib.Path)
  parser.add_argument("--out", type=pathlib.Path, help="also write the JSON here")
  args = parser.parse_args()
  per_run = {}
  for workdir in args.workdirs:
    rows = rl_rows(workdir)
    if not rows:
      raise SystemExit(f"{workdir}: no RL steps in metrics.jsonl")
    per_run[str(workdir)] = {key: fit for key in KEYS if (fit := slope(rows, key)) is not None}
  result = {"per_run": per_run, "pooled": {}}
  for key in KEYS:
    fits = [fits[key] for fits in per_run.values() if key in fits]
    if len(fits) >= 2:
      result["pooled"][key] = pooled(fits)
  line = json.dumps(result)
  if args.out:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(line + "\n")
  print(line)


if __name__ == "__main__":
  main()
