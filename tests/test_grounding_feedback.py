"""The feedback image (dot + crop) and ViGoRL's crop window, checked on pixels and hand-computed windows."""

import numpy as np
import pytest
from PIL import Image

from vrrl_jax.tasks.grounding import feedback


def _coordinate_image(width=252, height=200):
  """R = x, G = y, B = 255: every pixel says where it came from."""
  ys, xs = np.mgrid[0:height, 0:width]
  arr = np.stack([xs % 256, ys % 256, np.full_like(xs, 255)], axis=-1).astype(np.uint8)
  return Image.fromarray(arr, "RGB")


def test_dot_is_half_transparent_red_at_the_point_only():
  white = Image.new("RGB", (60, 40), (255, 255, 255))
  out = np.asarray(feedback.draw_dot(white, 30, 20)).astype(int)
  # alpha 128 over white: R = 255, G = B = 255 * 127 / 255 = 127 (+-1 for rounding).
  assert out[20, 30, 0] == 255 and 125 <= out[20, 30, 1] <= 129 and 125 <= out[20, 30, 2] <= 129
  assert out[20, 34, 1] < 200  # still inside the radius-5 disc
  for y, x in ((20, 37), (20, 23), (12, 30), (28, 30), (0, 0), (39, 59)):
    assert tuple(out[y, x]) == (255, 255, 255)
  blue = Image.new("RGB", (20, 20), (0, 0, 255))
  mixed = np.asarray(feedback.draw_dot(blue, 10, 10))[10, 10].astype(int)
  assert 126 <= mixed[0] <= 130 and mixed[1] == 0 and 125 <= mixed[2] <= 129  # half red, half blue
  assert np.asarray(white).min() == 255  # the input is not modified


@pytest.mark.parametrize(
  "x, y, expected",
  [
    (100, 100, (58, 58, 142, 142)),  # inside: the full 84 x 84 square
    (0, 0, (0, 0, 42, 42)),  # top-left corner: clipped, not shifted
    (251, 199, (209, 157, 252, 200)),  # bottom-right corner
    (10, 100, (0, 58, 52, 142)),  # left edge
    (126, 190, (84, 148, 168, 200)),  # bottom edge
  ],
)
def test_crop_window_position_and_size(x, y, expected):
  image = _coordinate_image()
  assert feedback.crop_box(252, 200, x, y, 84) == expected
  crop = feedback.feedback_image(image, x, y, crop_side=84)
  left, top, right, bottom = expected
  assert crop.size == (right - left, bottom - top)
  arr = np.asarray(crop).astype(int)
  # Away from the dot, each crop pixel is the original pixel it was cut from.
  for cy, cx in ((0, 0), (arr.shape[0] - 1, arr.shape[1] - 1), (0, arr.shape[1] - 1)):
    if abs(left + cx - x) > 6 or abs(top + cy - y) > 6:
      assert tuple(arr[cy, cx]) == ((left + cx) % 256, (top + cy) % 256, 255)
  # The dot is at the point's place in the crop: red at alpha 128 over the original pixel.
  original = np.array([x % 256, y % 256, 255])
  blended = (np.array([255, 0, 0]) * 128 + original * 127) / 255
  assert np.abs(arr[y - top, x - left] - blended).max() <= 2


def test_default_crop_is_200_square_on_large_images():
  image = Image.new("RGB", (896, 672), (255, 255, 255))
  crop = feedback.feedback_image(image, 400, 300)
  assert crop.size == (200, 200)
  arr = np.asarray(crop).astype(int)
  assert arr[100, 100, 0] == 255 and arr[100, 100, 1] < 140  # the dot at the centre
  assert tuple(arr[0, 0]) == (255, 255, 255)


def test_vigorl_crop_window():
  assert feedback.crop_window(100, 80, 50, 40, 10) == (40, 30, 60, 50)
  assert feedback.crop_window(100, 80, 3, 79, 10) == (0, 69, 13, 80)
  assert feedback.crop_window(100, 80, 150, 40, 10) == (140, 30, 141, 50)  # right <= left -> left + 1
  assert feedback.crop_window(100, 80, 5, -30, 10) == (0, 0, 15, 1)  # bottom <= top -> top + 1
  assert feedback.crop_window(100, 80, 5, 5, 0) == (5, 5, 6, 6)
  with pytest.raises(ValueError):
    feedback.crop_window(100, 80, 5, 5, -1)
  with pytest.raises(ValueError):
    feedback.crop_window(100, 80, 5.5, 5, 3)


def test_crop_side_scaling_and_validation():
  assert feedback.scaled_crop_side(252, 252) == 84  # 200 * 252 / 672 = 75 -> 3 * 28
  assert feedback.scaled_crop_side(280, 224) == 84  # 83.3 -> 84
  assert feedback.scaled_crop_side(896, 672) == 200
  assert feedback.scaled_crop_side(672, 300) == 200
  assert feedback.scaled_crop_side(112, 112) == 56  # 33 -> 28, floored at 56
  assert feedback.scaled_crop_side(504, 504) == 140  # 150 -> 140
  for bad in (0, 83, -2, 2.0):
    with pytest.raises(ValueError):
      feedback.crop_box(100, 100, 5, 5, bad)
  with pytest.raises(ValueError, match="outside"):
    feedback.feedback_image(Image.new("RGB", (50, 50)), 50, 10)
