"""vrrl_jax.data.processor against transformers' Qwen2VLImageProcessorPil and Qwen2_5_VLProcessor (the reference)."""

import json
import re

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
from PIL import Image

from conftest import SHARED
from vrrl_jax.data import processor as processor_lib
from vrrl_jax.data import tokenizer as tokenizer_lib

transformers = pytest.importorskip("transformers")
from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessorPil  # noqa: E402
from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as hf_qwen2_vl  # noqa: E402

ImageProcessorConfig = processor_lib.ImageProcessorConfig
SMALL_BUDGET = ImageProcessorConfig.qwen2_5_vl(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)

CONFIGS = {
  "qwen2_5_vl": ImageProcessorConfig.qwen2_5_vl(),
  "qwen3_vl": ImageProcessorConfig.qwen3_vl(),
  "small_budget": SMALL_BUDGET,
}

# (height, width): ordinary, odd, below min_pixels (upscaled), above the small budget's max (downscaled), extreme.
SIZES = [(60, 90), (37, 101), (20, 30), (1, 1), (251, 13), (300, 417), (481, 203), (14, 2800), (117, 117)]


def hf_image_processor(cfg: ImageProcessorConfig) -> Qwen2VLImageProcessorPil:
  return Qwen2VLImageProcessorPil(
    size={"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels},
    patch_size=cfg.patch_size,
    merge_size=cfg.merge_size,
    temporal_patch_size=cfg.temporal_patch_size,
    image_mean=list(cfg.mean),
    image_std=list(cfg.std),
  )


def hf_preprocess(images, cfg, **kwargs):
  out = hf_image_processor(cfg)(images=images, return_tensors="np", **kwargs)
  return out["pixel_values"], out["image_grid_thw"]


def random_image(rng, height, width, channels=3):
  return rng.integers(0, 256, (height, width, channels), dtype=np.uint8)


def assert_same_as_hf(ours, hf):
  pixel_values, grid = ours
  hf_pixel_values, hf_grid = hf
  assert pixel_values.dtype == np.float32 and grid.dtype == np.int64
  assert grid.shape == hf_grid.shape and np.array_equal(grid, hf_grid), (grid, hf_grid)
  assert pixel_values.shape == hf_pixel_values.shape
  assert np.array_equal(pixel_values, hf_pixel_values)


# ---------------------------------------------------------------------------------------------------------------
# Image preprocessing.


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_pixel_values_bit_exact_pil_inputs(config_name):
  cfg = CONFIGS[config_name]
  rng = np.random.default_rng(0)
  images = [Image.fromarray(random_image(rng, h, w)) for h, w in SIZES]
  for image in images:  # one at a time, so a mismatch names the size
    assert_same_as_hf(processor_lib.preprocess_images([image], cfg), hf_preprocess([image], cfg))
  assert_same_as_hf(processor_lib.preprocess_images(images, cfg), hf_preprocess(images, cfg))


def test_sizes_cover_both_resize_branches():
  """The SIZES list must exercise upscaling (min_pixels) and downscaling (max_pixels) under the small budget."""
  f = SMALL_BUDGET.factor
  upscaled = [s for s in SIZES if round(s[0] / f) * f * round(s[1] / f) * f < SMALL_BUDGET.min_pixels]
  downscaled = [s for s in SIZES if round(s[0] / f) * f * round(s[1] / f) * f > SMALL_BUDGET.max_pixels]
  assert len(upscaled) >= 2 and len(downscaled) >= 2


def test_pixel_values_bit_exact_numpy_inputs_smooth_image():
  cfg = SMALL_BUDGET
  yy, xx = np.mgrid[0:123, 0:77]
  smooth = np.stack([yy * 2, xx * 3, (yy + xx)], -1).clip(0, 255).astype(np.uint8)
  assert_same_as_hf(
    processor_lib.preprocess_images([smooth], cfg), hf_preprocess([smooth], cfg, input_data_format="channels_last")
  )


def test_qwen2_5_vl_example_from_notes():
  """QWEN_VL_NOTES §3: 60x90 gives grid [1,4,6] (24 rows of 1176, 6 tokens); under Qwen3-VL [1,14,20], 70 tokens."""
  image = np.zeros((60, 90, 3), np.uint8)
  pixel_values, grid = processor_lib.preprocess_images([image], ImageProcessorConfig.qwen2_5_vl())
  assert pixel_values.shape == (24, 1176) and grid.tolist() == [[1, 4, 6]]
  assert processor_lib.num_image_tokens(grid[0], 2) == 6
  _, grid3 = processor_lib.preprocess_images([image], ImageProcessorConfig.qwen3_vl())
  assert grid3.tolist() == [[1, 14, 20]] and processor_lib.num_image_tokens(grid3[0], 2) == 70


def test_patch_layout_against_plain_numpy_formula():
  """Patchify order from the notes' formula (CHW reshape/transpose, temporal broadcast) on a known image."""
  cfg = SMALL_BUDGET
  rng = np.random.default_rng(3)
  image = random_image(rng, 56, 84)  # already a multiple of 28: the resize is the identity
  pixel_values, grid = processor_lib.preprocess_images([image], cfg)
  x = ((image.astype(np.float64) * (1 / 255)).astype(np.float32) - np.float32(cfg.mean)) / np.float32(cfg.std)
  x = x.transpose(2, 0, 1)  # CHW
  c, p, m = 3, cfg.patch_size, cfg.merge_size
  gh, gw = 56 // p, 84 // p
  ref = x.reshape(c, gh // m, m, p, gw // m, m, p).transpose(1, 4, 2, 5, 0, 3, 6)
  ref = np.repeat(ref[:, :, :, :, :, None], cfg.temporal_patch_size, axis=5).reshape(gh * gw, -1)
  assert grid.tolist() == [[1, gh, gw]] and np.array_equal(pixel_values, ref)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
  height=st.integers(1, 5000),
  width=st.integers(1, 5000),
  factor=st.sampled_from([28, 32]),
  min_pixels=st.integers(1, 300_000),
  extra_pixels=st.integers(0, 3_000_000),
)
def test_smart_resize_matches_transformers(height, width, factor, min_pixels, extra_pixels):
  max_pixels = min_pixels + extra_pixels
  try:
    expected = hf_qwen2_vl.smart_resize(height, width, factor, min_pixels, max_pixels)
  except ValueError:
    with pytest.raises(ValueError, match="aspect ratio"):
      processor_lib.smart_resize(height, width, factor, min_pixels, max_pixels)
    return
  assert processor_lib.smart_resize(height, width, factor, min_pixels, max_pixels) == expected
  cfg = ImageProcessorConfig.qwen2_5_vl(patch_size=factor // 2, min_pixels=min_pixels, max_pixels=max_pixels)
  hf_patches = hf_image_processor(cfg).get_number_of_image_patches(height, width)
  t, gh, gw = processor_lib.image_grid_thw_for_size(height, width, cfg)
  assert t * gh * gw == hf_patches


def test_aspect_ratio_over_200_raises_like_transformers():
  image = np.zeros((5, 1001, 3), np.uint8)  # 200.2
  with pytest.raises(ValueError, match="aspect ratio"):
    hf_preprocess([image], SMALL_BUDGET, input_data_format="channels_last")
  with pytest.raises(ValueError, match="aspect ratio must be smaller than 200"):
    processor_lib.preprocess_images([image], SMALL_BUDGET)
  ok = np.zeros((5, 1000, 3), np.uint8)  # exactly 200 is allowed
  assert_same_as_hf(
    processor_lib.preprocess_images([ok], SMALL_BUDGET),
    hf_preprocess([ok], SMALL_BUDGET, input_data_format="channels_last"),
  )


def _pil_mode_images():
  rng = np.random.default_rng(7)
  rgb = random_image(rng, 45, 70)
  alpha = rng.integers(0, 256, (45, 70), dtype=np.uint8)
  rgba = Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA")
  gray = Image.fromarray(rgb[..., 0], mode="L")
  palette = Image.fromarray(rgb).quantize(colors=16)
  palette_transparent = palette.copy()
  palette_transparent.info["transparency"] = 3
  gray_transparent = gray.copy()
  gray_transparent.info["transparency"] = 128
  return {
    "RGBA": rgba,
    "LA": Image.fromarray(np.dstack([rgb[..., 1], alpha]), mode="LA"),
    "L": gray,
    "L_transparency": gray_transparent,
    "1": gray.convert("1"),
    "P": palette,
    "P_transparency": palette_transparent,
    "PA": rgba.convert("PA"),
    "CMYK": Image.fromarray(rgb).convert("CMYK"),
    "YCbCr": Image.fromarray(rgb).convert("YCbCr"),
  }


@pytest.mark.parametrize("mode_name", sorted(_pil_mode_images()))
def test_pil_modes_convert_like_transformers(mode_name):
  image = _pil_mode_images()[mode_name]
  assert_same_as_hf(processor_lib.preprocess_images([image], SMALL_BUDGET), hf_preprocess([image], SMALL_BUDGET))


def test_alpha_is_composited_onto_white():
  """A fully transparent pixel becomes white, an opaque one keeps its colour (transformers' convert_to_rgb)."""
  rgba = np.zeros((2, 2, 4), np.uint8)
  rgba[0, 0] = (10, 20, 30, 255)
  rgba[1, 1] = (10, 20, 30, 0)
  for image in (rgba, Image.fromarray(rgba, mode="RGBA")):
    rgb = np.asarray(processor_lib.to_rgb_pil(image))
    assert rgb[0, 0].tolist() == [10, 20, 30] and rgb[1, 1].tolist() == [255, 255, 255]


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_numpy_channel_counts_like_transformers(channels):
  image = random_image(np.random.default_rng(channels), 33, 61, channels)
  assert_same_as_hf(
    processor_lib.preprocess_images([image], SMALL_BUDGET),
    hf_preprocess([image], SMALL_BUDGET, input_data_format="channels_last"),
  )


@pytest.mark.parametrize(
  "bad, message",
  [
    (np.zeros((30, 40, 3), np.float32), "uint8"),
    (np.zeros((30, 40, 3), np.int64), "uint8"),
    (np.zeros((30, 40), np.uint8), "shape"),
    (np.zeros((2, 30, 40, 3), np.uint8), "shape"),
    (np.zeros((30, 40, 2), np.uint8), "shape"),
    (np.zeros((0, 40, 3), np.uint8), "empty"),
    (np.zeros((30, 0, 3), np.uint8), "empty"),
    (Image.new("RGB", (0, 5)), "empty"),
    (Image.new("I;16", (8, 8)), "mode"),
    (Image.new("F", (8, 8)), "mode"),
    ("image.png", "PIL.Image.Image or uint8 numpy"),
    (None, "PIL.Image.Image or uint8 numpy"),
    ([[1, 2], [3, 4]], "PIL.Image.Image or uint8 numpy"),
  ],
)
def test_bad_image_inputs_raise(bad, message):
  with pytest.raises((ValueError, TypeError), match=message):
    processor_lib.preprocess_images([bad], SMALL_BUDGET)


def test_bad_image_lists_raise():
  with pytest.raises(ValueError, match="empty"):
    processor_lib.preprocess_images([], SMALL_BUDGET)
  with pytest.raises(TypeError, match="list of images"):
    processor_lib.preprocess_images(np.zeros((30, 40, 3), np.uint8), SMALL_BUDGET)


def test_config_validation():
  with pytest.raises(ValueError, match="min_pixels"):
    ImageProcessorConfig.qwen2_5_vl(min_pixels=10_000, max_pixels=5_000)
  with pytest.raises(ValueError, match="patch_size"):
    ImageProcessorConfig.qwen2_5_vl(patch_size=0)
  with pytest.raises(ValueError, match="mean"):
    ImageProcessorConfig.qwen2_5_vl(mean=(0.5, 0.5))
  with pytest.raises(ValueError, match="std"):
    ImageProcessorConfig.qwen2_5_vl(std=(0.5, 0.0, 0.5))


# Hub preprocessor_config.json files (Qwen/Qwen2.5-VL-3B-Instruct, Qwen/Qwen3-VL-2B-Instruct).
HUB_QWEN2_5_VL = {
  "min_pixels": 3136,
  "max_pixels": 12845056,
  "patch_size": 14,
  "temporal_patch_size": 2,
  "merge_size": 2,
  "image_mean": [0.48145466, 0.4578275, 0.40821073],
  "image_std": [0.26862954, 0.26130258, 0.27577711],
  "image_processor_type": "Qwen2VLImageProcessor",
  "processor_class": "Qwen2_5_VLProcessor",
}
HUB_QWEN3_VL = {
  "size": {"longest_edge": 16777216, "shortest_edge": 65536},
  "patch_size": 16,
  "temporal_patch_size": 2,
  "merge_size": 2,
  "image_mean": [0.5, 0.5, 0.5],
  "image_std": [0.5, 0.5, 0.5],
  "processor_class": "Qwen3VLProcessor",
  "image_processor_type": "Qwen2VLImageProcessorFast",
}


def _hf_fields(hf):
  return dict(
    patch_size=hf.patch_size,
    merge_size=hf.merge_size,
    temporal_patch_size=hf.temporal_patch_size,
    min_pixels=hf.size["shortest_edge"],
    max_pixels=hf.size["longest_edge"],
    mean=tuple(hf.image_mean),
    std=tuple(hf.image_std),
  )


@pytest.mark.parametrize(
  "name, hub, constructor",
  [
    ("qwen2_5_vl", HUB_QWEN2_5_VL, ImageProcessorConfig.qwen2_5_vl),
    ("qwen3_vl", HUB_QWEN3_VL, ImageProcessorConfig.qwen3_vl),
  ],
)
def test_from_hf_dir_reads_hub_files_like_transformers(tmp_path, name, hub, constructor):
  (tmp_path / "preprocessor_config.json").write_text(json.dumps(hub))
  cfg = ImageProcessorConfig.from_hf_dir(tmp_path)
  hf = Qwen2VLImageProcessorPil.from_pretrained(tmp_path)
  assert dataclasses_asdict(cfg) == _hf_fields(hf)
  assert cfg == constructor()


def test_from_hf_dir_round_trips_save_pretrained(tmp_path):
  hf = Qwen2VLImageProcessorPil(
    min_pixels=1000, max_pixels=40_000, patch_size=16, image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6]
  )
  hf.save_pretrained(tmp_path)
  cfg = ImageProcessorConfig.from_hf_dir(tmp_path)
  assert dataclasses_asdict(cfg) == _hf_fields(hf)
  image = random_image(np.random.default_rng(11), 97, 143)
  out = hf(images=[image], return_tensors="np", input_data_format="channels_last")
  assert_same_as_hf(processor_lib.preprocess_images([image], cfg), (out["pixel_values"], out["image_grid_thw"]))


@pytest.mark.parametrize(
  "override, message",
  [
    ({"do_normalize": False}, "do_normalize"),
    ({"resample": 2}, "resample"),
    ({"rescale_factor": 0.5}, "rescale_factor"),
    ({"size": {"longest_edge": 1000}}, "shortest_edge"),
    ({"do_pad": True}, "unsupported keys"),
  ],
)
def test_from_hf_dir_rejects_unsupported_settings(tmp_path, override, message):
  (tmp_path / "preprocessor_config.json").write_text(json.dumps({**HUB_QWEN2_5_VL, **override}))
  with pytest.raises(ValueError, match=message):
    ImageProcessorConfig.from_hf_dir(tmp_path)
  with pytest.raises(FileNotFoundError):
    ImageProcessorConfig.from_hf_dir(tmp_path / "missing")


def dataclasses_asdict(cfg):
  import dataclasses

  return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------------------------------------------
# Chat formatting and tokenisation.

CORPUS = [
  "You are a helpful assistant. Describe the image. What is shown here? Move left, right, up, down.",
  "The agent is on the frozen lake. Avoid the holes and reach the goal.",
] * 20


class NoVideoProcessor(Qwen2_5_VLProcessor):
  """Qwen2_5_VLProcessor without a video processor (that needs torchvision): QWEN_VL_NOTES §4.4."""

  def check_argument_for_proper_class(self, name, arg):
    return None if arg is None else super().check_argument_for_proper_class(name, arg)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  """The tiny tokenizer as a user gets it: saved, then loaded with AutoTokenizer."""
  path = tmp_path_factory.mktemp("tok")
  tokenizer_lib.build_tokenizer(CORPUS, vocab_size=360).save_pretrained(path)
  tok = transformers.AutoTokenizer.from_pretrained(path)
  tok.padding_side = "left"
  return tok


def hf_processor(tokenizer, cfg, chat_template=None):
  template = tokenizer_lib.qwen2_5_vl_chat_template() if chat_template is None else chat_template
  return NoVideoProcessor(
    image_processor=hf_image_processor(cfg), tokenizer=tokenizer, video_processor=None, chat_template=template
  )


def hf_encode(proc, conversations, images, add_generation_prompt=True):
  texts = [
    proc.apply_chat_template(m, tokenize=False, add_generation_prompt=add_generation_prompt) for m in conversations
  ]
  flat = [image for row in images for image in row] or None
  return proc(text=texts, images=flat, return_tensors="np", padding=True)


def assert_encodings_equal(ours, hf):
  for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
    assert ours[key].dtype == hf[key].dtype and ours[key].shape == hf[key].shape, key
    assert np.array_equal(ours[key], hf[key]), key
  if "pixel_values" in hf:
    assert np.array_equal(ours["pixel_values"], hf["pixel_values"])
    assert np.array_equal(ours["image_grid_thw"], hf["image_grid_thw"])
  else:
    assert ours["pixel_values"].shape[0] == 0 and ours["image_grid_thw"].shape == (0, 3)


def user(*parts):
  return {"role": "user", "content": [{"type": "image"} if p is None else {"type": "text", "text": p} for p in parts]}


def assistant(text):
  return {"role": "assistant", "content": text}


@pytest.fixture(scope="module")
def images():
  rng = np.random.default_rng(5)
  return [Image.fromarray(random_image(rng, h, w)) for h, w in [(60, 90), (100, 50), (33, 47), (200, 150)]]


SINGLE = [user(None, "Describe the image.")]
TWO_IMAGES = [user(None, "What is shown here?", None)]
MULTI_TURN = [
  {"role": "system", "content": "Avoid the holes."},
  user(None, "Move left or right?"),
  assistant("Move right."),
  user("Now?", None),
  assistant("Move down, then up."),
  user("The goal."),
]


@pytest.mark.parametrize("config_name", ["small_budget", "qwen3_vl"])
@pytest.mark.parametrize(
  "conversation, n_images", [(SINGLE, 1), (TWO_IMAGES, 2), (MULTI_TURN, 2)], ids=["single", "two_images", "multi_turn"]
)
def test_chat_encoding_matches_hf_processor(tokenizer, images, config_name, conversation, n_images):
  cfg = CONFIGS[config_name]
  chat = processor_lib.ChatProcessor(tokenizer, cfg)
  proc = hf_processor(tokenizer, cfg)
  row_images = images[:n_images]
  for add_generation_prompt in (True, False):
    assert_encodings_equal(
      chat.encode(conversation, row_images, add_generation_prompt),
      hf_encode(proc, [conversation], [row_images], add_generation_prompt),
    )


def test_left_padded_batch_matches_hf_processor(tokenizer, images):
  chat = processor_lib.ChatProcessor(tokenizer, SMALL_BUDGET)
  proc = hf_processor(tokenizer, SMALL_BUDGET)
  conversations = [SINGLE, MULTI_TURN]
  batch_images = [[images[3]], images[:2]]
  ours = chat.encode_batch(conversations, batch_images)
  assert_encodings_equal(ours, hf_encode(proc, conversations, batch_images))
  assert ours["attention_mask"][0, 0] == 0 and ours["attention_mask"][1].all()  # row 0 is the padded one
  assert (ours["input_ids"][0][ours["attention_mask"][0] == 0] == tokenizer.pad_token_id).all()


def test_text_only_conversation_matches_hf_processor(tokenizer):
  chat = processor_lib.ChatProcessor(tokenizer, SMALL_BUDGET)
  conversation = [user("Describe the image."), assistant("Nothing."), {"role": "user", "content": "Again."}]
  assert_encodings_equal(
    chat.encode(conversation, []), hf_encode(hf_processor(tokenizer, SMALL_BUDGET), [conversation], [[]])
  )


def test_images_inside_messages_equal_images_argument(tokenizer, images):
  chat = processor_lib.ChatProcessor(tokenizer, SMALL_BUDGET)
  inline = [
    {
      "role": "user",
      "content": [
        {"type": "image", "image": images[0]},
        {"type": "text", "text": "Hi"},
        {"type": "image", "image": np.asarray(images[1])},
      ],
    }
  ]
  separate = [user(None, "Hi", None)]
  a = chat.encode(inline)
  b = chat.encode(separate, [images[0], np.asarray(images[1])])
  for key in a:
    assert np.array_equal(a[key], b[key]), key


def test_rendering_matches_notes_example(tokenizer):
  chat = processor_lib.ChatProcessor(tokenizer, SMALL_BUDGET)
  expected = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|><|image_pad|><|vision_end|>Describe.<|im_end|>\n<|im_start|>assistant\n"
  )
  assert chat.render([user(None, "Describe.")], add_generation_prompt=True) == expected


def test_stored_template_is_the_one_in_the_notes():
  notes = (SHARED / "docs" / "QWEN_VL_NOTES.md").read_text(encoding="utf-8")
  section = notes[notes.index("### 4.2") : notes.index("### 4.3")]
  block = re.search(r"```\n(.*?)\n```", section, re.S).group(1)
  assert tokenizer_lib.qwen2_5_vl_chat_template() == block


def test_qwen3_vl_processor_agrees_on_images(tokenizer, images):
  """Qwen3VLProcessor expands <|image_pad|> the same way (Qwen3-VL image settings, 2.5-VL template)."""
  from transformers import Qwen3VLProcessor

  class NoVideo3(Qwen3VLProcessor):
    def check_argument_for_proper_class(self, name, arg):
      return None if arg is None else super().check_argument_for_proper_class(name, arg)

  cfg = ImageProcessorConfig.qwen3_vl(max_pixels=32 * 32 * 64)
  proc = NoVideo3(
    image_processor=hf_image_processor(cfg),
    tokenizer=tokenizer,
    video_processor=None,
    chat_template=tokenizer_lib.qwen2_5_vl_chat_template(),
  )
  chat = processor_lib.ChatProcessor(tokenizer, cfg)
  assert_encodings_equal(chat.encode(MULTI_TURN, images[:2]), hf_encode(proc, [MULTI_TURN], [images[:2]]))


# ---------------------------------------------------------------------------------------------------------------
# Continuation segments.


def _concat(parts):
  return {key: np.concatenate([p[key] for p in parts], axis=0) for key in parts[0]}


def _as_segment(encoded):
  """A batch-of-1 encoding as 1-D token arrays."""
  return {k: (v[0] if k in ("input_ids", "attention_mask", "mm_token_type_ids") else v) for k, v in encoded.items()}


def _text_segment(chat, text):
  ids = chat.encode_text(text)
  return dict(
    input_ids=ids,
    attention_mask=np.ones_like(ids),
    mm_token_type_ids=np.zeros_like(ids),
    pixel_values=np.zeros((0, chat.image_config.patch_dim), np.float32),
    image_grid_thw=np.zeros((0, 3), np.int64),
  )


def _assert_parts_equal_whole(parts, whole):
  joined = _concat(parts)
  for key in whole:
    assert np.array_equal(joined[key], whole[key]), key


def test_segments_concatenate_to_whole_conversation(tokenizer, images):
  """prompt + generated text + feedback segment (+ text + segment) == one-shot tokenisation of it all."""
  chat = processor_lib.ChatProcessor(tokenizer, SMALL_BUDGET)
  prompt = [user(None, "Move left or right?")]
  reply_1, feedback_1 = "Move right.", [user("You fell in a hole. Look:", None, "Try again.")]
  reply_2, feedback_2 = "Move down.", [user(None, None, "Better.")]
  whole = _as_segment(
    chat.encode(prompt + [assistant(reply_1)] + feedback_1 + [assistant(reply_2)] + feedback_2, images[:4])
  )
  im_end = dict(
    _text_segment(chat, ""),
    input_ids=np.asarray([chat.token_ids.im_end_id]),
    attention_mask=np.ones(1, np.int64),
    mm_token_type_ids=np.zeros(1, np.int64),
  )

  # Cache holds generated text without <|im_end|>.
  parts = [
    _as_segment(chat.encode(prompt, images[:1])),
    _text_segment(chat, reply_1),
    chat.encode_segment(feedback_1, images[1:2], prefix_ends_with="text"),
    _text_segment(chat, reply_2),
    chat.encode_segment(feedback_2, images[2:4], prefix_ends_with="text"),
  ]
  _assert_parts_equal_whole(parts, whole)

  # Cache holds generated text and the <|im_end|> the model sampled.
  parts = [
    _as_segment(chat.encode(prompt, images[:1])),
    _text_segment(chat, reply_1),
    im_end,
    chat.encode_segment(feedback_1, images[1:2], prefix_ends_with="im_end"),
    _text_segment(chat, reply_2),
    im_end,
    chat.encode_segment(feedback_2, images[2:4], prefix_ends_with="im_end"),
  ]
  _assert_parts_equal_whole(parts, whole)

  # Whole turns appended one by one: an assistant turn, then a user turn with images.
  parts = [
    _as_segment(chat.encode(prompt, images[:1], add_generation_prompt=False)),
    chat.encode_segment([assistant(reply_1)], [], prefix_ends_with="turn", add_generation_prompt=False),
    chat.encode_segment(
      feedback_1 + [assistant(reply_2)], images[1:2], prefix_ends_with="turn", add_generation_prompt=False
    ),
    chat.encode_segment(feedback_2, images[2:4], prefix_ends_with="turn"),
  ]
  _assert_parts_equal_whole(parts, whole)


def test_segment_text_shape(tokenizer, images):
  chat = processor_lib.ChatProcessor(tokenizer, SMALL_BUDGET)
  segment = chat.encode_segment([user(None, "Go.")], [images[0]], prefix_ends_with="text")
  n = processor_lib.num_image_tokens(segment["image_grid_thw"][0], 2)
  expected = (
    "<|im_end|>\n<|im_start|>user\n<|vision_start|>"
    + "<|image_pad|>" * n
    + "<|vision_end|>Go.<|im_end|>\n<|im_start|>assistant\n"
  )
  assert tokenizer.decode(segment["input_ids"]) == expected
  assert segment["mm_token_type_ids"].sum() == n and segment["attention_mask"].all()


def test_chat_errors(tokenizer, images):
  chat = processor_lib.ChatProcessor(tokenizer, SMALL_BUDGET)
  with pytest.raises(ValueError, match="1 image items but 2 images"):
    chat.encode(SINGLE, images[:2])
  with pytest.raises(ValueError, match="no images given"):
    chat.encode(SINGLE)
  with pytest.raises(ValueError, match="both"):
    chat.encode([{"role": "user", "content": [{"type": "image", "image": images[0]}]}], [images[0]])
  with pytest.raises(ValueError, match="videos are not supported"):
    chat.encode([{"role": "user", "content": [{"type": "video"}]}], [])
  with pytest.raises(ValueError, match="only an 'image' value"):
    chat.encode([{"role": "user", "content": [{"type": "image", "url": "http://x/y.png"}]}], [images[0]])
  with pytest.raises(ValueError, match="content items"):
    chat.encode([{"role": "user", "content": [{"type": "audio"}]}], [])
  with pytest.raises(ValueError, match="role"):
    chat.encode([{"content": "hi"}], [])
  with pytest.raises(ValueError, match="non-empty"):
    chat.encode([], [])
  with pytest.raises(ValueError, match="2 <\\|image_pad\\|> tokens but 1 images"):
    chat.encode([user(None, "a literal <|image_pad|> in text")], [images[0]])
  with pytest.raises(ValueError, match="prefix_ends_with"):
    chat.encode_segment([user("x")], [], prefix_ends_with="eos")
  with pytest.raises(ValueError, match="one list of images per conversation"):
    chat.encode_batch([SINGLE, SINGLE], [[images[0]]])
