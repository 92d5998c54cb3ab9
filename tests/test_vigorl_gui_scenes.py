"""Mock GUI screens (ViGoRL GUI grounding): determinism, sizes, themes, unambiguous questions, boxes against
pixels, and a content description that ignores the theme and the size.

Expectations come from outside the generator: the module's declared tables, plain geometry on the returned boxes,
the pixels themselves, the content JSON parsed back, and a second Python process for determinism.
"""

import hashlib
import itertools
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from vrrl_jax.tasks.vigorl import gui
from vrrl_jax.tasks.vigorl.scene import POINT

STYLES = gui.ID_STYLES + gui.OOD_STYLES
SEEDS = (0, 1, 2, 7, 123)
ALL_SIZES = tuple(size for preset in gui.SIZES.values() for split in ("id", "ood") for size in preset[split])
SMALL = gui.SIZES["small"]["id"][0]
LARGE = gui.SIZES["large"]["id"][0]
NOUNS = {
  "menu": "menu",
  "button": "button",
  "item": "sidebar item",
  "tab": "tab",
  "field": "field",
  "checkbox": "checkbox",
}


def _scene(style="flat", seed=0, size=SMALL):
  return gui.scene(style, seed, size[0], size[1], "click")


def _clickable(scene):
  return (scene.target, *scene.elements)


def _digest(scene) -> str:
  return hashlib.sha256(scene.image.tobytes()).hexdigest()


def test_declared_tables():
  assert gui.KIND == "gui" and gui.QUESTIONS == ("click",)
  assert gui.ID_STYLES and gui.OOD_STYLES and not set(gui.ID_STYLES) & set(gui.OOD_STYLES)
  assert set(gui.SIZES) == {"small", "large"}
  assert gui.SIZES["small"]["id"] == ((504, 504),) and gui.SIZES["large"]["id"] == ((1344, 840),)
  for preset in gui.SIZES.values():
    assert set(preset) == {"id", "ood"} and preset["ood"]
  for w, h in ALL_SIZES:
    assert w % 28 == 0 and h % 28 == 0
  # Decoration never repeats a clickable label, so a question names exactly one thing on the screen.
  assert not set(gui.DECORATION) & set(gui.LABELS)


def test_same_arguments_same_bytes_in_another_process():
  cases = [(style, seed) for style in STYLES for seed in (0, 5)]
  code = (
    "import hashlib, json, sys\n"
    "from vrrl_jax.tasks.vigorl import gui\n"
    "out = [hashlib.sha256(gui.scene(s, n, 504, 504, 'click').image.tobytes()).hexdigest() for s, n in "
    f"{cases!r}]\n"
    "print(json.dumps(out))\n"
  )
  child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert json.loads(child.stdout.strip().splitlines()[-1]) == [_digest(_scene(s, n)) for s, n in cases]


@pytest.mark.parametrize("style", STYLES)
def test_other_seeds_other_pixels(style):
  digests = {_digest(_scene(style, seed)) for seed in SEEDS}
  assert len(digests) == len(SEEDS)


@pytest.mark.parametrize("size", ALL_SIZES)
@pytest.mark.parametrize("style", STYLES)
def test_image_is_rgb_at_the_requested_size(style, size):
  image = _scene(style, 3, size).image
  assert image.mode == "RGB" and image.size == size


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("style", STYLES)
def test_question_names_a_unique_target(style, seed):
  scene = _scene(style, seed)
  content = json.loads(scene.content)
  labels = [e["label"] for e in content["elements"]]
  target = content["elements"][content["target"]]
  assert labels.count(target["label"]) == 1
  assert len(set(labels)) == len(labels)  # every label on the screen is distinct
  assert set(labels) <= set(gui.LABELS)
  assert scene.question == f"Click the '{target['label']}' {NOUNS[target['type']]}."
  assert content["question"] == scene.question
  assert scene.target.description == f"the '{target['label']}' {NOUNS[target['type']]}"
  assert scene.answer_type == POINT and scene.answer == ""
  assert scene.box == scene.target.box
  assert len(scene.elements) == len(labels) - 1
  assert scene.target not in scene.elements


def test_questions_cover_every_element_type():
  kinds = set()
  for seed in range(80):
    content = json.loads(_scene("flat", seed).content)
    kinds.add(content["elements"][content["target"]]["type"])
  assert kinds == set(NOUNS)


@pytest.mark.parametrize("size", ALL_SIZES)
@pytest.mark.parametrize("seed", SEEDS)
def test_boxes_inside_large_enough_and_disjoint(seed, size):
  scene = _scene("classic", seed, size)
  w, h = size
  for element in _clickable(scene):
    x1, y1, x2, y2 = element.box
    assert 0 <= x1 <= x2 < w and 0 <= y1 <= y2 < h, element
  x1, y1, x2, y2 = scene.box
  assert x2 - x1 + 1 >= 28 and y2 - y1 + 1 >= 20
  for a, b in itertools.combinations(_clickable(scene), 2):
    apart = a.box[2] < b.box[0] or b.box[2] < a.box[0] or a.box[3] < b.box[1] or b.box[3] < a.box[1]
    assert apart, (a, b)


@pytest.mark.parametrize("size", (SMALL, LARGE))
@pytest.mark.parametrize("seed", SEEDS)
def test_content_boxes_are_the_pixel_boxes(seed, size):
  scene = _scene("mobile", seed, size)
  content = json.loads(scene.content)
  by_description = {e.description: e.box for e in _clickable(scene)}
  w, h = size
  for item in content["elements"]:
    fx1, fy1, fx2, fy2 = item["box"]
    box = by_description[f"the '{item['label']}' {NOUNS[item['type']]}"]
    expected = (fx1 * w, fy1 * h, fx2 * w - 1, fy2 * h - 1)
    assert np.allclose(box, expected, atol=1.0), (item, box)


def _background(pixels: np.ndarray) -> np.ndarray:
  """The window's background: the most common colour of the screen."""
  packed = (pixels[..., 0].astype(np.int64) << 16) | (pixels[..., 1].astype(np.int64) << 8) | pixels[..., 2]
  values, counts = np.unique(packed, return_counts=True)
  top = int(values[np.argmax(counts)])
  return np.array([top >> 16, (top >> 8) & 255, top & 255])


@pytest.mark.parametrize("size", (SMALL, LARGE, gui.SIZES["small"]["ood"][0]))
@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("style", STYLES)
def test_something_is_drawn_in_every_clickable_box(style, seed, size):
  scene = _scene(style, seed, size)
  pixels = np.asarray(scene.image)
  background = _background(pixels)
  x1, y1, x2, y2 = scene.box
  target = pixels[y1 : y2 + 1, x1 : x2 + 1].reshape(-1, 3)
  assert len(np.unique(target, axis=0)) > 1
  for element in _clickable(scene):
    x1, y1, x2, y2 = element.box
    patch = pixels[y1 : y2 + 1, x1 : x2 + 1].reshape(-1, 3)
    differs = np.any(patch != background, axis=1).mean()
    assert differs >= 0.02, (element, differs)


@pytest.mark.parametrize("seed", SEEDS)
def test_content_ignores_style_and_size(seed):
  contents = {_scene(style, seed, size).content for style in STYLES for size in ALL_SIZES}
  assert len(contents) == 1
  content = json.loads(contents.pop())
  assert content["kind"] == "gui" and content["elements"]


def test_content_differs_across_seeds():
  contents = [_scene("flat", seed).content for seed in range(40)]
  assert len(set(contents)) == len(contents)
  assert contents[0] == json.dumps(json.loads(contents[0]), sort_keys=True, separators=(",", ":"))


def test_a_fresh_small_scene_renders_quickly():
  start = time.perf_counter()
  gui.scene("dark", 987_654, *SMALL, "click")
  assert time.perf_counter() - start < 1.0  # typically a few ms; loose for a loaded machine


@pytest.mark.parametrize(
  "kwargs, message",
  [
    ({"style": "neon"}, "unknown gui style"),
    ({"style": 3}, "unknown gui style"),
    ({"question": "color"}, "unknown gui question"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"seed": True}, "seed"),
    ({"width": 500}, "multiples of 28"),
    ({"height": 510}, "multiples of 28"),
    ({"width": 28}, "width"),
    ({"height": 10_000}, "height"),
    ({"width": 504.0}, "width"),
  ],
)
def test_bad_arguments_raise(kwargs, message):
  args = {"style": "flat", "seed": 0, "width": 504, "height": 504, "question": "click", **kwargs}
  with pytest.raises(ValueError, match=message):
    gui.scene(**args)
