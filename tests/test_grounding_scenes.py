"""Grounding scenes: specs, determinism, sizes, ground-truth boxes against pixels, styles, splits, coordinates.

Expectations come from outside the code under test: the style tables (colours), plain geometry, hand-computed
scalings, and a second Python process for determinism.
"""

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from vrrl_jax.data import processor as processor_lib
from vrrl_jax.tasks.grounding import content, coords, scenes, splits, styles

ALL_SIZES = (
  scenes.SIZE_PRESETS["small"]
  + scenes.OOD_SIZE_PRESETS["small"]
  + scenes.SIZE_PRESETS["large"]
  + scenes.OOD_SIZE_PRESETS["large"]
)


def _spec(kind="table", style="plain", seed=0, width=252, height=252, question=0):
  return scenes.parse_spec(dict(kind=kind, style=style, seed=seed, width=width, height=height, question=question))


def _pixels(spec):
  return np.asarray(scenes.render_scene(spec)[0])


def test_spec_round_trip_and_hash():
  spec = _spec("bars", "soft", 12, 896, 672, 3)
  again = scenes.parse_spec(spec.to_dict())
  assert again == spec and scenes.parse_spec(spec) == spec
  assert scenes.spec_hash(spec) == scenes.spec_hash(spec.to_dict())
  assert scenes.spec_hash(spec) != scenes.spec_hash({**spec.to_dict(), "question": 2})
  # The content hash ignores style-free differences (size, question) but not the data.
  assert scenes.scene_hash(spec) == scenes.scene_hash({**spec.to_dict(), "question": 2, "width": 252, "height": 252})
  assert scenes.scene_hash(spec) != scenes.scene_hash({**spec.to_dict(), "seed": 13})


@pytest.mark.parametrize(
  "change, message",
  [
    ({"kind": "pie"}, "unknown scene kind"),
    ({"style": "neon"}, "unknown grounding style"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"width": 250}, "multiple of 28"),
    ({"height": 28}, "multiple of 28"),
    ({"width": True}, "width"),
    ({"question": 10_000}, "out of range"),
    ({"extra": 1}, "unknown keys"),
  ],
)
def test_parse_spec_rejects_bad_input(change, message):
  raw = {**_spec().to_dict(), **change}
  with pytest.raises(ValueError, match=message):
    scenes.parse_spec(raw)


def test_parse_spec_rejects_missing_keys_and_non_mappings():
  raw = _spec().to_dict()
  del raw["seed"]
  with pytest.raises(ValueError, match="missing keys"):
    scenes.parse_spec(raw)
  with pytest.raises(ValueError, match="mapping"):
    scenes.parse_spec(["table"])


def test_same_spec_same_pixels_across_processes():
  specs = [_spec("table", "striped", 5), _spec("bars", "dark", 6), _spec("hbars", "contrast", 7, 280, 224)]
  here = [hashlib.sha256(_pixels(s).tobytes()).hexdigest() for s in specs]
  code = (
    "import hashlib, numpy as np\n"
    "from vrrl_jax.tasks.grounding import scenes\n"
    f"for d in {[s.to_dict() for s in specs]!r}:\n"
    "  print(hashlib.sha256(np.asarray(scenes.render_scene(d)[0]).tobytes()).hexdigest())\n"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
  assert out == here
  assert not np.array_equal(_pixels(specs[0]), _pixels(_spec("table", "striped", 8)))


def test_sizes_are_multiples_of_28_and_unresized():
  for w, h in ALL_SIZES:
    assert w % 28 == 0 and h % 28 == 0
  qwen25 = processor_lib.ImageProcessorConfig.qwen2_5_vl().__dict__
  tiny = processor_lib.ImageProcessorConfig(
    **{**qwen25, "min_pixels": 56 * 56, "max_pixels": 252 * 252}
  )  # tiny CPU config
  for w, h in scenes.SIZE_PRESETS["small"] + scenes.OOD_SIZE_PRESETS["small"]:
    assert coords.is_unresized(w, h, tiny)
  for w, h in scenes.SIZE_PRESETS["large"]:
    assert coords.is_unresized(w, h) and coords.is_unresized(w, h, processor_lib.ImageProcessorConfig.qwen3_vl())
  image, _ = scenes.render_scene(_spec(width=280, height=224))
  assert image.size == (280, 224) and image.mode == "RGB"


def test_id_and_ood_styles_are_disjoint():
  assert set(styles.ID_STYLES) and set(styles.OOD_STYLES)
  assert not set(styles.ID_STYLES) & set(styles.OOD_STYLES)
  assert set(styles.ID_STYLES) | set(styles.OOD_STYLES) == set(styles.STYLES)
  id_palettes = {c for name in styles.ID_STYLES for c in styles.STYLES[name].bar_colors}
  for name in styles.OOD_STYLES:
    assert not set(styles.STYLES[name].bar_colors) & id_palettes


@pytest.mark.parametrize("kind", content.KINDS)
def test_bar_and_cell_boxes_hold_their_element(kind):
  for style in styles.STYLES:
    for size in (scenes.SIZE_PRESETS["small"][0], scenes.SIZE_PRESETS["large"][0]):
      spec = _spec(kind, style, 21, *size)
      pixels = _pixels(spec)
      boxes = scenes.elements(spec)
      data = scenes.scene_data(spec)
      st = styles.get_style(style)
      if kind == "table":
        _check_table(pixels, boxes, data, st)
      else:
        _check_bars(pixels, boxes, data, st, kind)


def _check_bars(pixels, boxes, data, st, kind):
  for i, (label, value) in enumerate(zip(data.labels, data.values)):
    x1, y1, x2, y2 = boxes[f"bar:{label}"]
    inner = pixels[y1 + 1 : y2, x1 + 1 : x2]  # without the outline ring, if any
    assert inner.size and np.all(inner == st.bar_colors[i % len(st.bar_colors)]), (label, st.name)
    # The box is tight on the bar's free end: just beyond it is no bar colour.
    beyond = pixels[y1 - 1, (x1 + x2) // 2] if kind == "bars" else pixels[(y1 + y2) // 2, x2 + 1]
    assert tuple(beyond) not in st.bar_colors
  # Longer bars for larger values, in the chart's direction.
  extent = [(b[3] - b[1]) if kind == "bars" else (b[2] - b[0]) for b in (boxes[f"bar:{lab}"] for lab in data.labels)]
  assert np.argsort(extent, kind="stable").tolist() == np.argsort(data.values, kind="stable").tolist()


def _check_table(pixels, boxes, data, st):
  text = np.array(st.text, dtype=int)
  for r, row in enumerate(data.labels):
    for c, column in enumerate(data.columns):
      x1, y1, x2, y2 = boxes[f"cell:{row}:{column}"]
      # Same rows as the row label, same columns as the header, in reading order.
      assert (y1, y2) == boxes[f"row:{row}"][1::2] and (x1, x2) == boxes[f"col:{column}"][0::2]
      if r:
        assert y1 > boxes[f"cell:{data.labels[r - 1]}:{column}"][3]
      # The left and top edges lie on the table's rules.
      assert tuple(pixels[(y1 + y2) // 2, x1]) == st.grid and tuple(pixels[y1, (x1 + x2) // 2]) == st.grid
      # The value's glyphs are inside: pixels close to the text colour, away from the rules.
      inner = pixels[y1 + 3 : y2 - 2, x1 + 3 : x2 - 2].astype(int)
      assert (np.abs(inner - text).sum(axis=-1) < 90).sum() >= 3  # even a lone "1" at 10 px has 7


def test_fonts_are_legible_for_every_style_and_preset():
  for style in styles.STYLES:
    sizes = ALL_SIZES if styles.STYLES[style].ood else scenes.SIZE_PRESETS["small"] + scenes.SIZE_PRESETS["large"]
    for kind in content.KINDS:
      for seed in range(4):
        for size in sizes:
          try:
            lay = scenes.layout(_spec(kind, style, seed, *size))
          except ValueError:
            assert styles.STYLES[style].ood and size in scenes.OOD_SIZE_PRESETS["small"]
            continue
          assert lay.font_px >= styles.MIN_FONT_PX == 10


def test_every_question_has_one_answer_element():
  for kind in content.KINDS:
    spec = _spec(kind, "dense", 3)
    data = scenes.scene_data(spec)
    boxes = scenes.elements(spec)
    for i, template in enumerate(scenes.questions(spec)):
      q = scenes.scene_question({**spec.to_dict(), "question": i})
      assert q.text == template.text and q.box == boxes[template.target]
      assert q.point == ((q.box[0] + q.box[2]) // 2, (q.box[1] + q.box[3]) // 2)
      assert scenes.element_at(spec, *q.point) == template.target
      if template.family in ("max", "min"):
        pick = max if template.family == "max" else min
        assert template.target == "bar:" + data.labels[data.values.index(pick(data.values))]
      if template.family == "column_max":
        column = template.text.split("'")[1]
        c = data.columns.index(column)
        best = max(range(len(data.labels)), key=lambda r: data.values[r][c])
        assert template.target == f"cell:{data.labels[best]}:{column}"
  bars = scenes.scene_data(_spec("bars", "plain", 9))
  ordered = sorted(bars.values)
  assert ordered[-1] - ordered[-2] >= 8 and ordered[1] - ordered[0] >= 8


def test_splits_are_disjoint_deterministic_and_styled():
  train = splits.make_split("train", 150, 0)
  eval_id = splits.make_split("eval_id", 40, 0)
  eval_ood = splits.make_split("eval_ood", 40, 1)
  assert splits.make_split("train", 150, 0) == train
  assert splits.make_split("train", 150, 1) != train
  train_hashes = {scenes.scene_hash(s) for s in train}
  eval_hashes = {scenes.scene_hash(s) for s in eval_id + eval_ood}
  assert len(train_hashes) == len(train)
  assert not train_hashes & eval_hashes
  assert not {scenes.spec_hash(s) for s in train} & {scenes.spec_hash(s) for s in eval_id + eval_ood}
  assert {s.style for s in train + eval_id} <= set(styles.ID_STYLES)
  assert {s.style for s in eval_ood} <= set(styles.OOD_STYLES)
  assert {s.kind for s in train} == set(content.KINDS)
  for s in eval_ood:
    scenes.layout(s)  # every emitted spec fits
  # Even a train split built with another seed never reaches an eval scene.
  assert not {scenes.scene_hash(s) for s in splits.make_split("train", 150, 99)} & eval_hashes
  with pytest.raises(ValueError, match="OOD styles"):
    splits.make_split("eval_ood", 1, 0, ("plain",))
  with pytest.raises(ValueError, match="in-distribution"):
    splits.make_split("train", 1, 0, ("dark",))
  with pytest.raises(ValueError, match="unknown split"):
    splits.make_split("test", 1, 0)
  exclude = {scenes.scene_hash(s) for s in train[:10]}
  assert not {scenes.scene_hash(s) for s in splits.make_split("train", 10, 0, exclude=exclude)} & exclude


def test_scaling_coordinates_by_hand():
  assert coords.processed_size(250, 250) == (252, 252)  # round(250 / 28) * 28
  assert coords.processed_size(252, 252) == (252, 252)
  small = processor_lib.ImageProcessorConfig(
    **{**processor_lib.ImageProcessorConfig.qwen2_5_vl().__dict__, "max_pixels": 252 * 252}
  )
  assert coords.processed_size(896, 672, small) == (280, 196)  # beta = sqrt(896 * 672 / 252**2) ~ 3.08
  assert coords.scale_point((10, 20), (100, 100), (200, 200)) == (21, 41)  # (10.5 * 2, 20.5 * 2) floored
  assert coords.scale_point((99, 0), (100, 100), (50, 50)) == (49, 0)
  assert coords.scale_box((10, 10, 19, 19), (100, 100), (200, 200)) == (20, 20, 39, 39)
  assert coords.scale_box((0, 0, 99, 49), (100, 50), (50, 25)) == (0, 0, 49, 24)
  assert coords.scale_box((3, 3, 4, 4), (10, 10), (5, 5)) == (1, 1, 2, 2)
  with pytest.raises(ValueError):
    coords.scale_box((5, 5, 4, 4), (10, 10), (5, 5))
