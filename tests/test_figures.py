"""The run figure: the pixels where the data says they should be, from a workdir's own files."""

import json

import numpy as np
import pytest
from PIL import Image

from vrrl_jax.tasks import frozenlake
from vrrl_jax import figures
from vrrl_jax.metrics import MetricsWriter


def _pixel(image, x, y):
  return tuple(int(v) for v in np.asarray(image)[int(round(y)), int(round(x))])


def test_line_chart_puts_points_at_their_coordinates():
  image = figures.line_chart(
    {"a": ([0, 10], [0.0, 1.0]), "b": ([0, 10], [1.0, 0.0])}, title="t", xlabel="x", ylabel="y", y_range=(0.0, 1.0)
  )
  left, top, right, bottom = figures.plot_area()
  assert _pixel(image, left, bottom) == figures.COLOURS[0]  # a starts bottom left
  assert _pixel(image, right, top) == figures.COLOURS[0]  # and ends top right
  assert _pixel(image, right, bottom) == figures.COLOURS[1]  # b ends bottom right
  with pytest.raises(ValueError, match="no points"):
    figures.line_chart({}, title="t", xlabel="x", ylabel="y")


def test_bar_chart_bar_heights():
  image = figures.bar_chart(["L3", "L4"], {"before": [0.5, 0.0], "after": [1.0, None]}, title="t", ylabel="y")
  left, top, right, bottom = figures.plot_area()
  group_w = (right - left) / 2
  bar_w = group_w * 0.8 / 2
  before_x = left + group_w * 0.1 + bar_w / 2
  after_x = before_x + bar_w
  height = bottom - top
  assert _pixel(image, before_x, bottom - 0.25 * height) == figures.COLOURS[0]
  assert _pixel(image, before_x, bottom - 0.75 * height) != figures.COLOURS[0]  # the bar stops at 0.5
  assert _pixel(image, after_x, bottom - 0.95 * height) == figures.COLOURS[1]
  assert _pixel(image, after_x + group_w, bottom - 0.5 * height) != figures.COLOURS[1]  # None: no bar


def test_line_chart_band_is_tinted_between_its_bounds():
  image = figures.line_chart(
    {"a": ([0, 10], [0.5, 0.5])},
    bands={"a": ([0, 10], [0.25, 0.25], [0.75, 0.75])},
    title="t",
    xlabel="x",
    ylabel="y",
    y_range=(0.0, 1.0),
  )
  left, top, right, bottom = figures.plot_area()
  mid_x, height = (left + right) / 2, bottom - top
  assert _pixel(image, mid_x, bottom - 0.5 * height) == figures.COLOURS[0]  # the line
  assert _pixel(image, mid_x, bottom - 0.6 * height) == figures.tint(figures.COLOURS[0])  # inside the band
  assert _pixel(image, mid_x, bottom - 0.4 * height) == figures.tint(figures.COLOURS[0])
  assert _pixel(image, mid_x, bottom - 0.85 * height) == (255, 255, 255)  # above it
  image = figures.line_chart(
    {"a": ([0, 10], [0.5, 0.5])}, colours={"a": (1, 2, 3)}, title="t", xlabel="x", ylabel="y", y_range=(0.0, 1.0)
  )
  assert _pixel(image, mid_x, bottom - 0.5 * height) == (1, 2, 3)  # a colour chosen per series
  with pytest.raises(ValueError, match="unknown series"):
    figures.line_chart({"a": ([0], [0])}, bands={"b": ([0], [0], [1])}, title="t", xlabel="x", ylabel="y")


def test_bar_chart_whiskers_span_their_interval():
  image = figures.bar_chart(["L3"], {"a": [0.5]}, errors={"a": [(0.3, 0.8)]}, title="t", ylabel="y")
  left, top, right, bottom = figures.plot_area()
  bar_w = (right - left) * 0.8
  mid_x, height = left + (right - left) * 0.1 + bar_w / 2, bottom - top
  assert _pixel(image, mid_x, bottom - 0.7 * height) == figures.AXIS  # whisker above the bar's top
  assert _pixel(image, mid_x, bottom - 0.9 * height) == (255, 255, 255)  # ends at 0.8
  assert _pixel(image, mid_x + bar_w * 0.2, bottom - 0.8 * height) == figures.AXIS  # the upper cap
  with pytest.raises(ValueError, match="unknown series"):
    figures.bar_chart(["L3"], {"a": [0.5]}, errors={"b": [None]}, title="t", ylabel="y")


def test_run_figure_from_a_workdir(tmp_path):
  with MetricsWriter(tmp_path, process_index=0, console=None, tensorboard=False) as writer:
    for step in range(1, 4):
      writer.write(step, {"sft/loss": 1.0 / step})
    for step in range(4, 9):
      writer.write(step, {"reward/overall": 0.1 * (step - 3)})
  for name, rate in (("eval_before_rl", 0.25), ("eval_after_rl", 0.5)):
    (tmp_path / name).mkdir()
    (tmp_path / name / "metrics.json").write_text(
      json.dumps({"by_level": {"L3": {"optimal_rate": rate}, "L10": {"optimal_rate": rate / 2}}})
    )
  path = figures.run_figure(tmp_path, first_rl_step=4, task=frozenlake)
  image = Image.open(path)
  assert path.name == "run.png" and image.size == (2 * figures.WIDTH, figures.HEIGHT)
  left, top, right, bottom = figures.plot_area()
  # RL steps 1..5 with rewards 0.1..0.5: the first point bottom left, the last top right (data range)
  assert _pixel(image, left, bottom) == figures.COLOURS[1]  # the moving average starts at the same point, on top
  assert _pixel(image, right, top) == figures.COLOURS[0]
  group_w = (right - left) / 2
  bar_x = figures.WIDTH + left + group_w * 0.1 + group_w * 0.8 / 4  # L3 (levels sorted numerically), before
  assert _pixel(image, bar_x, bottom - 0.2 * (bottom - top)) == figures.COLOURS[0]
  assert _pixel(image, bar_x, bottom - 0.3 * (bottom - top)) != figures.COLOURS[0]


def test_run_figure_needs_something_to_draw(tmp_path):
  with MetricsWriter(tmp_path, process_index=0, console=None, tensorboard=False) as writer:
    writer.write(1, {"sft/loss": 1.0})
  with pytest.raises(ValueError, match="nothing|no RL reward"):
    figures.run_figure(tmp_path, first_rl_step=2, task=frozenlake)
