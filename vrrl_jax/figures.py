"""Plain PNG charts drawn with Pillow (no plotting dependency): a run's picture at a glance.

``run_figure(workdir, first_rl_step, task)`` draws what a training run did: the sampled training reward per RL step
(with a moving average) and the task's greedy eval numbers per group (``task.eval_bars``: FrozenLake's optimal_rate
per level) before and after RL, side by side, to ``workdir/run.png``.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

from vrrl_jax import metrics as metrics_lib

WIDTH, HEIGHT = 560, 360
MARGIN = dict(left=56, right=16, top=36, bottom=44)
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))
AXIS, GRID, TEXT = (60, 60, 60), (225, 225, 225), (20, 20, 20)
FIGURE_FILE = "run.png"


def tint(colour: tuple[int, int, int], amount: float = 0.75) -> tuple[int, int, int]:
  """``colour`` mixed with white (``amount`` of white): a band behind a line of that colour."""
  return tuple(round(c + (255 - c) * amount) for c in colour)


def _font():
  return ImageFont.load_default()


def plot_area() -> tuple[int, int, int, int]:
  """(left, top, right, bottom) pixel bounds of a chart's data area."""
  return MARGIN["left"], MARGIN["top"], WIDTH - MARGIN["right"], HEIGHT - MARGIN["bottom"]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
  step = (hi - lo) / n
  magnitude = 10 ** math.floor(math.log10(step)) if step > 0 else 1.0
  step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= step), default=step)
  first = math.ceil(lo / step) * step
  return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _frame(draw: ImageDraw.ImageDraw, title: str, xlabel: str, ylabel: str, y_range: tuple[float, float], y_of) -> None:
  left, top, right, bottom = plot_area()
  font = _font()
  for y in _ticks(*y_range):
    py = y_of(y)
    draw.line([(left, py), (right, py)], fill=GRID)
    draw.text((left - 6, py), f"{y:g}", fill=TEXT, font=font, anchor="rm")
  draw.rectangle([left, top, right, bottom], outline=AXIS)
  draw.text(((left + right) / 2, 8), title, fill=TEXT, font=font, anchor="mt")
  draw.text(((left + right) / 2, HEIGHT - 6), xlabel, fill=TEXT, font=font, anchor="mb")
  draw.text((6, top - 16), ylabel, fill=TEXT, font=font, anchor="lt")


def _legend(draw: ImageDraw.ImageDraw, names: Sequence[str], colours: Sequence[tuple[int, int, int]]) -> None:
  left, top, _, _ = plot_area()
  for i, (name, colour) in enumerate(zip(names, colours)):
    y = top + 8 + 14 * i
    draw.rectangle([left + 8, y - 4, left + 18, y + 4], fill=colour)
    draw.text((left + 24, y), name, fill=TEXT, font=_font(), anchor="lm")


def line_chart(
  series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
  *,
  title: str,
  xlabel: str,
  ylabel: str,
  y_range: tuple[float, float] | None = None,
  bands: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]] | None = None,
  colours: Mapping[str, tuple[int, int, int]] | None = None,
) -> Image.Image:
  """Lines of (x, y) points; ``y_range`` fixes the y axis (default: the data's range). ``bands``: per series name,
  (xs, lows, highs) shaded in a light tint of the series' colour behind the lines (e.g. the spread over seeds).
  ``colours``: a colour per series name (default: COLOURS in order), e.g. to match another chart's."""
  colours = [(colours or {}).get(name, COLOURS[i % len(COLOURS)]) for i, name in enumerate(series)]
  bands = dict(bands or {})
  if unknown := sorted(set(bands) - set(series)):
    raise ValueError(f"line chart {title!r}: bands for unknown series {unknown}")
  points = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys)]
  points += [(x, y) for xs, lows, highs in bands.values() for x, lo, hi in zip(xs, lows, highs) for y in (lo, hi)]
  if not points:
    raise ValueError(f"line chart {title!r} has no points")
  x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
  y_lo, y_hi = y_range or (min(p[1] for p in points), max(p[1] for p in points))
  x_hi, y_hi = (x_hi if x_hi > x_lo else x_lo + 1), (y_hi if y_hi > y_lo else y_lo + 1)
  left, top, right, bottom = plot_area()
  x_of = lambda x: left + (x - x_lo) / (x_hi - x_lo) * (right - left)  # noqa: E731
  y_of = lambda y: bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top)  # noqa: E731
  image = Image.new("RGB", (WIDTH, HEIGHT), "white")
  draw = ImageDraw.Draw(image)
  _frame(draw, title, xlabel, ylabel, (y_lo, y_hi), y_of)
  for x in _ticks(x_lo, x_hi):
    draw.text((x_of(x), bottom + 4), f"{x:g}", fill=TEXT, font=_font(), anchor="mt")
  for i, name in enumerate(series):
    if name in bands and len(bands[name][0]) > 1:
      xs, lows, highs = bands[name]
      outline = [(x_of(x), y_of(y)) for x, y in zip(xs, highs)] + [
        (x_of(x), y_of(y)) for x, y in reversed(list(zip(xs, lows)))
      ]
      draw.polygon(outline, fill=tint(colours[i]))
  for i, (xs, ys) in enumerate(series.values()):
    pixels = [(x_of(x), y_of(y)) for x, y in zip(xs, ys)]
    colour = colours[i]
    if len(pixels) > 1:
      draw.line(pixels, fill=colour, width=2)
    for px, py in pixels:
      draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
  _legend(draw, list(series), colours)
  return image


def bar_chart(
  groups: Sequence[str],
  bars: Mapping[str, Sequence[float]],
  *,
  title: str,
  ylabel: str,
  y_range: tuple[float, float] = (0.0, 1.0),
  errors: Mapping[str, Sequence[tuple[float, float] | None]] | None = None,
) -> Image.Image:
  """Grouped bars: one group per label in ``groups``, one bar per series in ``bars`` (values aligned). ``errors``:
  per series, one (low, high) interval per group (or None), drawn as a whisker on its bar."""
  errors = dict(errors or {})
  if unknown := sorted(set(errors) - set(bars)):
    raise ValueError(f"bar chart {title!r}: errors for unknown series {unknown}")
  left, top, right, bottom = plot_area()
  y_lo, y_hi = y_range
  y_of = lambda y: bottom - (min(max(y, y_lo), y_hi) - y_lo) / (y_hi - y_lo) * (bottom - top)  # noqa: E731
  image = Image.new("RGB", (WIDTH, HEIGHT), "white")
  draw = ImageDraw.Draw(image)
  _frame(draw, title, "", ylabel, y_range, y_of)
  group_w = (right - left) / max(len(groups), 1)
  bar_w = group_w * 0.8 / max(len(bars), 1)
  for g, label in enumerate(groups):
    x0 = left + g * group_w + group_w * 0.1
    for b, (name, values) in enumerate(bars.items()):
      if values[g] is None:
        continue
      draw.rectangle(
        [x0 + b * bar_w, y_of(values[g]), x0 + (b + 1) * bar_w - 1, bottom], fill=COLOURS[b % len(COLOURS)]
      )
      interval = errors.get(name, [None] * len(groups))[g]
      if interval is not None:
        mid, cap = x0 + (b + 0.5) * bar_w, max(bar_w * 0.25, 2)
        lo, hi = y_of(interval[0]), y_of(interval[1])
        draw.line([(mid, lo), (mid, hi)], fill=AXIS, width=1)
        for y in (lo, hi):
          draw.line([(mid - cap, y), (mid + cap, y)], fill=AXIS, width=1)
    draw.text((left + (g + 0.5) * group_w, bottom + 6), label, fill=TEXT, font=_font(), anchor="mt")
  _legend(draw, list(bars), [COLOURS[b % len(COLOURS)] for b in range(len(bars))])
  return image


def side_by_side(*images: Image.Image) -> Image.Image:
  out = Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)), "white")
  x = 0
  for image in images:
    out.paste(image, (x, 0))
    x += image.width
  return out


def moving_average(values: Sequence[float], window: int) -> list[float]:
  out = []
  for i in range(len(values)):
    chunk = values[max(0, i - window + 1) : i + 1]
    out.append(sum(chunk) / len(chunk))
  return out


def run_figure(workdir: str | os.PathLike, first_rl_step: int, task) -> pathlib.Path:
  """``workdir/run.png``: training reward per RL step (steps after ``first_rl_step - 1``) and the task's eval bars
  before and after RL (each eval drawn if its ``metrics.json`` exists)."""
  workdir = pathlib.Path(workdir)
  records = [
    r for r in metrics_lib.read_metrics(workdir) if r["step"] >= first_rl_step and r.get("reward/overall") is not None
  ]
  steps = [r["step"] - first_rl_step + 1 for r in records]
  rewards = [r["reward/overall"] for r in records]
  panels = []
  if rewards:
    panels.append(
      line_chart(
        {"reward/overall": (steps, rewards), "moving average (5)": (steps, moving_average(rewards, 5))},
        title="training reward per RL step",
        xlabel="RL step",
        ylabel="reward",
      )
    )
  evals = {}
  for name in ("eval_before_rl", "eval_after_rl"):
    path = workdir / name / "metrics.json"
    if path.is_file():
      evals[name.removeprefix("eval_").replace("_", " ")] = task.eval_bars(json.loads(path.read_text()))
  if evals:
    groups = list(dict.fromkeys(group for values in evals.values() for group in values))
    bars = {name: [values.get(group) for group in groups] for name, values in evals.items()}
    metric = task.EVAL_BAR_METRIC
    panels.append(bar_chart(groups, bars, title=f"greedy eval {metric} per group", ylabel=metric))
  if not panels:
    raise ValueError(f"{workdir}: no RL reward and no eval metrics to draw")
  path = workdir / FIGURE_FILE
  side_by_side(*panels).save(path)
  return path
