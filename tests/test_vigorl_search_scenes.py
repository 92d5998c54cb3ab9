"""Visual search scenes: determinism, sizes, question uniqueness against the pixels, tight and disjoint boxes, a
style- and size-free content, argument checks and the target's size at the processed resolution.

Expectations come from outside the code under test: the style's palette (the exact RGB a colour name is drawn in),
pixel counts, a second Python process for determinism, and Pillow's own bicubic downscale.
"""

import hashlib
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vrrl_jax.tasks.vigorl import scene as scene_lib
from vrrl_jax.tasks.vigorl import search

SEEDS = (0, 1, 7, 123, 2**40 + 5)
ALL_STYLES = search.ID_STYLES + search.OOD_STYLES
SMALL = search.SIZES["small"]["id"][0]
ALL_SIZES = tuple(size for preset in search.SIZES.values() for split in preset.values() for size in split)


def _pixels(sc) -> np.ndarray:
  return np.asarray(sc.image, dtype=np.int16)


def _is_color(pixels: np.ndarray, rgb) -> np.ndarray:
  return np.all(pixels == np.asarray(rgb, dtype=np.int16), axis=-1)


def _color_shape(description: str) -> tuple[str, str]:
  """("a blue circle" | "the red star") -> ("blue", "circle")."""
  article, color, shape = description.split()
  assert article in ("a", "the") and color in search.COLORS and shape in search.SHAPES, description
  return color, shape


def _objects(sc):
  return (sc.target, *sc.elements)


def test_public_names():
  assert search.KIND == "search"
  assert search.QUESTIONS == ("color", "shape", "locate")
  assert set(search.ID_STYLES).isdisjoint(search.OOD_STYLES)
  assert len(search.ID_STYLES) >= 2 and len(search.OOD_STYLES) >= 2
  for names in (search.COLORS, search.SHAPES):
    assert len(set(names)) == len(names) >= 4
    assert all(name.isalpha() and name.islower() for name in names)
  assert set(search.SIZES) == {"small", "large"}
  for preset in search.SIZES.values():
    assert set(preset) == {"id", "ood"}
    for width, height in preset["id"] + preset["ood"]:
      assert width % 28 == 0 and height % 28 == 0
  assert search.SIZES["small"]["id"] == ((1008, 1008),)
  # Palettes: every colour drawn distinct from the others and from the background in every style.
  for name in ALL_STYLES:
    style = search.STYLES[name]
    rgbs = [style.rgb(c) for c in search.COLORS]
    assert len(set(rgbs)) == len(rgbs) and style.background not in rgbs


@pytest.mark.parametrize("style", ALL_STYLES)
@pytest.mark.parametrize("question", search.QUESTIONS)
def test_deterministic_and_seed_dependent(style, question):
  first = search.scene(style, 5, *SMALL, question).image.tobytes()
  search._scene.cache_clear()
  search._layout.cache_clear()
  again = search.scene(style, 5, *SMALL, question)
  assert again.image.tobytes() == first
  assert search.scene(style, 6, *SMALL, question).image.tobytes() != first


def test_deterministic_across_processes():
  code = (
    "import hashlib; from vrrl_jax.tasks.vigorl import search; "
    "sc = search.scene('noisy', 11, 1176, 840, 'locate'); "
    "print(hashlib.sha256(sc.image.tobytes()).hexdigest(), sc.box)"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(None, 1)
  here = search.scene("noisy", 11, 1176, 840, "locate")
  assert out[0] == hashlib.sha256(here.image.tobytes()).hexdigest()
  assert out[1].strip() == str(here.box)


@pytest.mark.parametrize("width, height", ALL_SIZES)
def test_image_size(width, height):
  sc = search.scene("grid", 3, width, height, "shape")
  assert isinstance(sc, scene_lib.Scene)
  assert sc.image.mode == "RGB" and sc.image.size == (width, height)
  for element in _objects(sc):
    x1, y1, x2, y2 = element.box
    assert 0 <= x1 <= x2 < width and 0 <= y1 <= y2 < height


@pytest.mark.parametrize("style", ALL_STYLES)
@pytest.mark.parametrize("seed", SEEDS)
def test_color_question(style, seed):
  sc = search.scene(style, seed, *SMALL, "color")
  data = json.loads(sc.content)
  shape = data["target"]["shape"]
  assert sc.question == f"What colour is the {shape}?"
  assert sc.answer_type == scene_lib.STRING and sc.answer == data["target"]["color"] in search.COLORS
  assert sc.target.description == f"the {sc.answer} {shape}"
  # Exactly one object of the named shape, in the content and in the elements.
  assert [d["shape"] for d in data["distractors"]].count(shape) == 0
  assert all(_color_shape(e.description)[1] != shape for e in sc.elements)
  # The target's box holds pixels of exactly the answer colour's RGB.
  x1, y1, x2, y2 = sc.box
  crop = _pixels(sc)[y1 : y2 + 1, x1 : x2 + 1]
  assert _is_color(crop, search.STYLES[style].rgb(sc.answer)).sum() >= 10


@pytest.mark.parametrize("style", ALL_STYLES)
@pytest.mark.parametrize("seed", SEEDS)
def test_shape_question(style, seed):
  sc = search.scene(style, seed, *SMALL, "shape")
  data = json.loads(sc.content)
  color = data["target"]["color"]
  assert sc.question == f"What shape is the {color} object?"
  assert sc.answer_type == scene_lib.STRING and sc.answer == data["target"]["shape"] in search.SHAPES
  assert [d["color"] for d in data["distractors"]].count(color) == 0
  # Pixel-wise: the named colour appears inside the target's box and nowhere else on the canvas.
  x1, y1, x2, y2 = sc.box
  mask = _is_color(_pixels(sc), search.STYLES[style].rgb(color))
  inside = mask[y1 : y2 + 1, x1 : x2 + 1].sum()
  assert inside >= 10 and mask.sum() == inside


@pytest.mark.parametrize("style", ALL_STYLES)
@pytest.mark.parametrize("seed", SEEDS)
def test_locate_question(style, seed):
  sc = search.scene(style, seed, *SMALL, "locate")
  data = json.loads(sc.content)
  color, shape = data["target"]["color"], data["target"]["shape"]
  assert sc.question == f"Point to the {color} {shape}."
  assert sc.answer_type == scene_lib.POINT and sc.answer == ""
  assert sc.target.description == f"the {color} {shape}" and sc.box == sc.target.box
  pairs = [(d["color"], d["shape"]) for d in data["distractors"]]
  assert (color, shape) not in pairs
  assert [_color_shape(e.description) for e in sc.elements] == pairs
  x1, y1, x2, y2 = sc.box
  assert _is_color(_pixels(sc)[y1 : y2 + 1, x1 : x2 + 1], search.STYLES[style].rgb(color)).sum() >= 10


@pytest.mark.parametrize("style", ALL_STYLES)
@pytest.mark.parametrize("seed, question", list(zip(SEEDS, itertools.cycle(search.QUESTIONS))))
def test_boxes_tight_and_disjoint(style, seed, question):
  sc = search.scene(style, seed, *SMALL, question)
  pixels = _pixels(sc)
  h, w = pixels.shape[:2]
  boxes = [e.box for e in _objects(sc)]
  assert 20 <= len(sc.elements) <= 40
  for a, b in itertools.combinations(boxes, 2):  # at least 2 px of background between any two objects
    assert a[2] + 2 < b[0] or b[2] + 2 < a[0] or a[3] + 2 < b[1] or b[3] + 2 < a[1], (a, b)
  masks = {c: _is_color(pixels, search.STYLES[style].rgb(c)) for c in search.COLORS}
  margin = 8
  for element in _objects(sc):
    x1, y1, x2, y2 = element.box
    mask = masks[_color_shape(element.description)[0]]
    # Pixels of the object's colour on each of the box's four edges...
    assert mask[y1, x1 : x2 + 1].any() and mask[y2, x1 : x2 + 1].any(), element
    assert mask[y1 : y2 + 1, x1].any() and mask[y1 : y2 + 1, x2].any(), element
    # ...and none in a ring around it, except inside other objects' boxes (a window, in window coordinates).
    wx1, wy1 = max(0, x1 - margin), max(0, y1 - margin)
    wx2, wy2 = min(w - 1, x2 + margin), min(h - 1, y2 + margin)
    ring = np.ones((wy2 - wy1 + 1, wx2 - wx1 + 1), bool)
    for bx1, by1, bx2, by2 in boxes:
      ring[max(0, by1 - wy1) : max(0, by2 - wy1 + 1), max(0, bx1 - wx1) : max(0, bx2 - wx1 + 1)] = False
    assert not (mask[wy1 : wy2 + 1, wx1 : wx2 + 1] & ring).any(), element


@pytest.mark.parametrize("width, height", ALL_SIZES)
def test_target_away_from_border(width, height):
  """At least the target's size between it and each border (the layout is style-free: one style suffices)."""
  for seed in SEEDS:
    for question in search.QUESTIONS:
      x1, y1, x2, y2 = search.scene("outline", seed, width, height, question).box
      side = max(x2 - x1, y2 - y1) + 1
      assert x1 >= side and y1 >= side and width - 1 - x2 >= side and height - 1 - y2 >= side


@pytest.mark.parametrize("seed", SEEDS)
def test_content_is_style_and_size_free(seed):
  for question in search.QUESTIONS:
    contents = {search.scene(style, seed, w, h, question).content for style in ALL_STYLES for w, h in ALL_SIZES[:3]}
    assert len(contents) == 1
    (content,) = contents
    assert json.dumps(json.loads(content), sort_keys=True, separators=(",", ":")) == content
    for word in ALL_STYLES:
      assert f'"{word}"' not in content
    assert content != search.scene("plain", seed + 1, *SMALL, question).content
  assert len({search.scene("plain", seed, *SMALL, q).content for q in search.QUESTIONS}) == 3


def test_content_positions_match_pixels():
  """The content's fractional centres are where the boxes are drawn, at every size."""
  for width, height in ALL_SIZES:
    sc = search.scene("plain", 2, width, height, "color")
    data = json.loads(sc.content)
    items = [data["target"], *data["distractors"]]
    for item, element in zip(items, _objects(sc)):
      x1, y1, x2, y2 = element.box
      assert abs((x1 + x2) / 2 - item["x"] * width) <= 2 and abs((y1 + y2) / 2 - item["y"] * height) <= 2
      assert element.description.split()[1:] == [item["color"], item["shape"]]


@pytest.mark.parametrize(
  "args, message",
  [
    (("neon", 0, 1008, 1008, "color"), "unknown search style"),
    (("plain", 0, 1008, 1008, "size"), "unknown search question"),
    (("plain", 0, 1000, 1008, "color"), "multiple of 28"),
    (("plain", 0, 1008, 28, "color"), "multiple of 28"),
    (("plain", 0, 1680, 840, "color"), "aspect"),
    (("plain", -1, 1008, 1008, "color"), "seed"),
    (("plain", 1.5, 1008, 1008, "color"), "seed"),
    (("plain", True, 1008, 1008, "color"), "seed"),
    (("plain", 0, "1008", 1008, "color"), "width"),
    ((["plain"], 0, 1008, 1008, "color"), "unknown search style"),
  ],
)
def test_bad_arguments(args, message):
  with pytest.raises(ValueError, match=message):
    search.scene(*args)


@pytest.mark.parametrize("width, height", search.SIZES["small"]["id"] + search.SIZES["small"]["ood"])
@pytest.mark.parametrize("style", ALL_STYLES)
def test_target_is_tiny_at_processed_resolution(style, width, height):
  """The tiny model's processor shrinks the image to ~252 x 252 px: there the target spans at most 7 px a side."""
  scale = 252 / (width * height) ** 0.5
  size = (round(width * scale), round(height * scale))
  for seed in SEEDS:
    sc = search.scene(style, seed, width, height, "color")
    x1, y1, x2, y2 = sc.box
    # Only the target's own pixels, white on black, downscaled as the processor would.
    mask = _is_color(_pixels(sc), search.STYLES[style].rgb(sc.answer))
    alone = np.zeros(mask.shape, np.uint8)
    alone[y1 : y2 + 1, x1 : x2 + 1] = mask[y1 : y2 + 1, x1 : x2 + 1] * 255
    small = np.asarray(Image.fromarray(alone).resize(size, Image.BICUBIC))
    rows, cols = np.nonzero(small > 64)
    assert rows.size, (style, seed)
    assert rows.max() - rows.min() + 1 <= 7 and cols.max() - cols.min() + 1 <= 7
    # A zoom on an 84 px processed window (336 original px) shown at 252 px makes it readable: >= 12 px a side.
    assert min(x2 - x1, y2 - y1) + 1 >= 12 * 336 / 252 * (width * height) ** 0.5 / 1008
