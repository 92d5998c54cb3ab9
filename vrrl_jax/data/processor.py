"""Qwen2.5-VL / Qwen3-VL image preprocessing and chat tokenisation, equal to transformers' PIL-backend processor.

Image side (numpy + PIL only): the same steps as `Qwen2VLImageProcessorPil` (QWEN_VL_NOTES §3), so pixel_values and
image_grid_thw match it bit for bit. Chat side: renders the chat template with the tokenizer, tokenises, expands
each <|image_pad|> into t*h*w/merge² copies, and returns what `Qwen2_5_VLProcessor` returns, plus continuation
segments whose concatenation equals the tokenisation of the whole conversation (for appending turns to a KV cache).
"""

import dataclasses
import json
import math
import pathlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

from vrrl_jax.data import tokenizer as tokenizer_lib

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESCALE_FACTOR = 1 / 255
MAX_ASPECT_RATIO = 200

# PIL modes whose conversion to RGB is well defined; 16/32-bit and float modes would be clipped silently.
SUPPORTED_PIL_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr")

# Defaults of `Qwen2VLImageProcessorPil` itself, used by from_hf_dir for keys a preprocessor_config.json omits.
_HF_CLASS_DEFAULTS = dict(
  patch_size=14,
  merge_size=2,
  temporal_patch_size=2,
  min_pixels=56 * 56,
  max_pixels=28 * 28 * 1280,
  mean=OPENAI_CLIP_MEAN,
  std=OPENAI_CLIP_STD,
)
_HF_METADATA_KEYS = ("image_processor_type", "processor_class", "auto_map")


@dataclasses.dataclass(frozen=True)
class ImageProcessorConfig:
  """Settings of Qwen2VLImageProcessor; min/max_pixels are its size["shortest_edge"/"longest_edge"]."""

  patch_size: int
  merge_size: int
  temporal_patch_size: int
  min_pixels: int
  max_pixels: int
  mean: tuple[float, float, float]
  std: tuple[float, float, float]

  def __post_init__(self):
    for name in ("patch_size", "merge_size", "temporal_patch_size", "min_pixels", "max_pixels"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"ImageProcessorConfig.{name} must be a positive int, got {value!r}")
    if self.min_pixels > self.max_pixels:
      raise ValueError(f"min_pixels {self.min_pixels} > max_pixels {self.max_pixels}")
    for name in ("mean", "std"):
      value = tuple(float(v) for v in getattr(self, name))
      if len(value) != 3:
        raise ValueError(f"ImageProcessorConfig.{name} needs 3 values (RGB), got {value}")
      object.__setattr__(self, name, value)
    if any(s <= 0 for s in self.std):
      raise ValueError(f"std must be positive, got {self.std}")

  @property
  def factor(self) -> int:
    """Resized sides are multiples of this: one merged token covers factor x factor pixels."""
    return self.patch_size * self.merge_size

  @property
  def patch_dim(self) -> int:
    return 3 * self.temporal_patch_size * self.patch_size * self.patch_size

  @classmethod
  def qwen2_5_vl(cls, **overrides) -> "ImageProcessorConfig":
    """Qwen2.5-VL hub preprocessor_config.json (patch 14, 3136..12845056 pixels, CLIP mean/std)."""
    base = dict(
      patch_size=14,
      merge_size=2,
      temporal_patch_size=2,
      min_pixels=3136,
      max_pixels=12845056,
      mean=OPENAI_CLIP_MEAN,
      std=OPENAI_CLIP_STD,
    )
    return cls(**{**base, **overrides})

  @classmethod
  def qwen3_vl(cls, **overrides) -> "ImageProcessorConfig":
    """Qwen3-VL hub preprocessor_config.json (patch 16, 65536..16777216 pixels, mean = std = 0.5)."""
    base = dict(
      patch_size=16,
      merge_size=2,
      temporal_patch_size=2,
      min_pixels=65536,
      max_pixels=16777216,
      mean=(0.5, 0.5, 0.5),
      std=(0.5, 0.5, 0.5),
    )
    return cls(**{**base, **overrides})

  def to_hf_dict(self) -> dict:
    """preprocessor_config.json for these settings (Qwen2VLImageProcessor reads it back as ``from_hf_dir``)."""
    return {
      "image_processor_type": "Qwen2VLImageProcessor",
      "processor_class": "Qwen2_5_VLProcessor",
      "do_convert_rgb": True,
      "do_resize": True,
      "do_rescale": True,
      "do_normalize": True,
      "resample": 3,
      "rescale_factor": RESCALE_FACTOR,
      "image_mean": list(self.mean),
      "image_std": list(self.std),
      "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
      "patch_size": self.patch_size,
      "merge_size": self.merge_size,
      "temporal_patch_size": self.temporal_patch_size,
    }

  @classmethod
  def from_hf_dir(cls, path: str | pathlib.Path) -> "ImageProcessorConfig":
    """Reads preprocessor_config.json the way Qwen2VLImageProcessorPil.from_pretrained does.

    Missing keys take that class's defaults; a top-level min_pixels/max_pixels overrides `size`. Settings this
    port does not implement (no resize/rescale/normalise, another resample filter or rescale factor) raise.
    """
    file = pathlib.Path(path) / "preprocessor_config.json"
    if not file.is_file():
      raise FileNotFoundError(f"no preprocessor_config.json in {path}")
    raw = json.loads(file.read_text(encoding="utf-8"))
    known = {
      "size",
      "min_pixels",
      "max_pixels",
      "patch_size",
      "merge_size",
      "temporal_patch_size",
      "image_mean",
      "image_std",
      "do_convert_rgb",
      "do_resize",
      "do_rescale",
      "do_normalize",
      "resample",
      "rescale_factor",
      *_HF_METADATA_KEYS,
    }
    unknown = sorted(set(raw) - known)
    if unknown:
      raise ValueError(f"{file}: unsupported keys {unknown}")
    for flag in ("do_convert_rgb", "do_resize", "do_rescale", "do_normalize"):
      if raw.get(flag, True) is not True:
        raise ValueError(f"{file}: {flag}={raw[flag]!r} is not supported (only true)")
    if raw.get("resample", 3) != Image.Resampling.BICUBIC:
      raise ValueError(f"{file}: resample={raw['resample']!r} is not supported (only 3 = bicubic)")
    if raw.get("rescale_factor", RESCALE_FACTOR) != RESCALE_FACTOR:
      raise ValueError(f"{file}: rescale_factor={raw['rescale_factor']!r} is not supported (only 1/255)")

    fields = dict(_HF_CLASS_DEFAULTS)
    if "size" in raw:
      size = raw["size"]
      if not isinstance(size, dict) or not size.get("shortest_edge") or not size.get("longest_edge"):
        raise ValueError(f"{file}: size must have shortest_edge and longest_edge, got {size!r}")
      fields.update(min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"])
    for key in ("min_pixels", "max_pixels", "patch_size", "merge_size", "temporal_patch_size"):
      if raw.get(key) is not None:
        fields[key] = raw[key]
    for key, field in (("image_mean", "mean"), ("image_std", "std")):
      if key in raw:
        value = raw[key]
        fields[field] = (value,) * 3 if isinstance(value, (int, float)) else tuple(value)
    return cls(**fields)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
  """Target (height, width): multiples of `factor`, area in [min_pixels, max_pixels], aspect ratio near the input."""
  if height < 1 or width < 1:
    raise ValueError(f"image must be at least 1x1, got height={height} width={width}")
  if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
    raise ValueError(
      f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, "
      f"got {max(height, width) / min(height, width)} for {height}x{width}"
    )
  h_bar = round(height / factor) * factor
  w_bar = round(width / factor) * factor
  if h_bar * w_bar > max_pixels:
    beta = math.sqrt((height * width) / max_pixels)
    h_bar = max(factor, math.floor(height / beta / factor) * factor)
    w_bar = max(factor, math.floor(width / beta / factor) * factor)
  elif h_bar * w_bar < min_pixels:
    beta = math.sqrt(min_pixels / (height * width))
    h_bar = math.ceil(height * beta / factor) * factor
    w_bar = math.ceil(width * beta / factor) * factor
  return h_bar, w_bar


def image_grid_thw_for_size(height: int, width: int, cfg: ImageProcessorConfig) -> tuple[int, int, int]:
  """The (t, h, w) patch grid an image of this size gets, without touching pixels."""
  h_bar, w_bar = smart_resize(height, width, cfg.factor, cfg.min_pixels, cfg.max_pixels)
  return 1, h_bar // cfg.patch_size, w_bar // cfg.patch_size


def num_image_tokens(grid_thw: Sequence[int], merge_size: int) -> int:
  """<|image_pad|> tokens an image takes in the text: one per merge x merge block of patches."""
  t, h, w = (int(v) for v in grid_thw)
  return t * h * w // (merge_size * merge_size)


def to_rgb_pil(image) -> Image.Image:
  """RGB PIL image the way transformers' convert_to_rgb makes one (alpha is composited onto white).

  PIL images with an alpha band or a `transparency` entry are composited with PIL's alpha_composite; uint8 numpy
  HWC arrays with 4 channels use transformers' float formula round(a*rgb + (1-a)*255); 1 channel is repeated.
  """
  if isinstance(image, Image.Image):
    if image.mode not in SUPPORTED_PIL_MODES:
      raise ValueError(f"unsupported PIL image mode {image.mode!r}; supported: {SUPPORTED_PIL_MODES}")
    if image.width < 1 or image.height < 1:
      raise ValueError(f"image is empty: size {image.size}")
    if "A" in image.getbands() or image.info.get("transparency") is not None:
      rgba = image.convert("RGBA")
      background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
      return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
  if isinstance(image, np.ndarray):
    if image.dtype != np.uint8:
      raise ValueError(f"numpy images must be uint8 HWC in [0, 255], got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
      raise ValueError(
        f"numpy images must have shape (height, width, channels) with 1, 3 or 4 channels, got shape {image.shape}"
      )
    if image.shape[0] < 1 or image.shape[1] < 1:
      raise ValueError(f"image is empty: shape {image.shape}")
    channels = image.shape[-1]
    if channels == 1:
      rgb = np.repeat(image, 3, axis=-1)
    elif channels == 4:
      alpha = image[..., 3:4] / 255
      rgb = np.round(alpha * image[..., :3] + (1 - alpha) * 255).astype(np.uint8)
    else:
      rgb = image
    return Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
  raise TypeError(f"images must be PIL.Image.Image or uint8 numpy arrays, got {type(image).__name__}")


def preprocess_image(image, cfg: ImageProcessorConfig) -> tuple[np.ndarray, tuple[int, int, int]]:
  """One image -> (patches float32 [gh*gw, 3*T*P*P] in merge-block order, (1, gh, gw))."""
  rgb = to_rgb_pil(image)
  h_bar, w_bar = smart_resize(rgb.height, rgb.width, cfg.factor, cfg.min_pixels, cfg.max_pixels)
  resized = np.asarray(rgb.resize((w_bar, h_bar), resample=Image.Resampling.BICUBIC))  # uint8 HWC
  rescaled = (resized.astype(np.float64) * RESCALE_FACTOR).astype(np.float32)
  normalized = (rescaled - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)

  p, m, t = cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size
  gh, gw = h_bar // p, w_bar // p
  blocks = normalized.reshape(gh // m, m, p, gw // m, m, p, 3)
  blocks = blocks.transpose(0, 3, 1, 4, 6, 2, 5)  # (gh/m, gw/m, m, m, C, P, P)
  # A still image is its own T frames: repeat it along the temporal patch axis.
  blocks = np.broadcast_to(blocks[:, :, :, :, :, None], (*blocks.shape[:5], t, p, p))
  return blocks.reshape(gh * gw, 3 * t * p * p), (1, gh, gw)


def preprocess_images(images: Sequence, cfg: ImageProcessorConfig) -> tuple[np.ndarray, np.ndarray]:
  """Images -> (pixel_values float32 [sum of gh*gw, 3*T*P*P], image_grid_thw int64 [n_images, 3])."""
  if isinstance(images, (Image.Image, np.ndarray)) or not isinstance(images, Sequence):
    raise TypeError(f"images must be a list of images, got {type(images).__name__}")
  if not images:
    raise ValueError("images is empty")
  patches, grids = zip(*(preprocess_image(image, cfg) for image in images))
  return np.concatenate(patches, axis=0), np.asarray(grids, dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------------
# Chat formatting and tokenisation.

IMAGE_TOKEN = "<|image_pad|>"
IM_END = "<|im_end|>"
# What a cached sequence ends with when a continuation segment is appended, and the text that must come first.
_SEGMENT_OPENERS = {"text": IM_END + "\n", "im_end": "\n", "turn": ""}


def _validated_messages(messages) -> tuple[list[dict], list]:
  """Checks HF-format messages; returns a copy without image payloads (for the template) and the payloads."""
  if not isinstance(messages, (list, tuple)) or not messages:
    raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
  view, payloads = [], []
  for i, message in enumerate(messages):
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
      raise ValueError(f"message {i} must be a dict with a str 'role', got {message!r}")
    content = message.get("content")
    if isinstance(content, str):
      view.append({"role": message["role"], "content": content})
      continue
    if not isinstance(content, (list, tuple)):
      raise ValueError(f"message {i} content must be a str or a list of items, got {type(content).__name__}")
    items = []
    for item in content:
      kind = item.get("type") if isinstance(item, dict) else None
      if kind == "image":
        if set(item) - {"type", "image"}:
          raise ValueError(
            f"message {i}: image items may carry only an 'image' value (a PIL image or "
            f"uint8 array), got keys {sorted(item)}"
          )
        items.append({"type": "image"})
        payloads.append(item.get("image"))
      elif kind == "text" and isinstance(item.get("text"), str) and set(item) == {"type", "text"}:
        items.append({"type": "text", "text": item["text"]})
      elif kind == "video" or (isinstance(item, dict) and "video" in item):
        raise ValueError(f"message {i}: videos are not supported")
      else:
        raise ValueError(
          f"message {i}: content items must be {{'type': 'image'}} or {{'type': 'text', 'text': str}}, got {item!r}"
        )
    view.append({"role": message["role"], "content": items})
  return view, payloads


class ChatProcessor:
  """Chat template + tokenizer + image preprocessing; outputs what Qwen2_5_VLProcessor(return_tensors="np") does.

  Images come either in the `images` argument (in order of appearance) or as the "image" value of each
  {"type": "image"} content item, not both. Token arrays are int64; pixel_values/image_grid_thw are always
  present (with zero rows when there are no images, where the HF processor leaves the keys out).
  """

  def __init__(self, tokenizer, image_config: ImageProcessorConfig, chat_template: str | None = None):
    self.tokenizer = tokenizer
    self.image_config = image_config
    self.chat_template = tokenizer_lib.qwen2_5_vl_chat_template() if chat_template is None else chat_template
    self.token_ids = tokenizer_lib.special_token_ids(tokenizer)

  def render(self, messages, add_generation_prompt: bool) -> str:
    """The chat template's text, one <|image_pad|> per image."""
    view, _ = _validated_messages(messages)
    return self._render_view(view, add_generation_prompt)

  def _render_view(self, view: list[dict], add_generation_prompt: bool) -> str:
    return self.tokenizer.apply_chat_template(
      view, chat_template=self.chat_template, tokenize=False, add_generation_prompt=add_generation_prompt
    )

  def encode_text(self, text: str) -> np.ndarray:
    """Token ids of plain text (e.g. an assistant reply), no specials added."""
    if not isinstance(text, str):
      raise TypeError(f"text must be str, got {type(text).__name__}")
    return np.asarray(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)

  def _resolve_images(self, payloads: list, images) -> list:
    if images is None:
      if any(p is None for p in payloads):
        raise ValueError(
          f"{len(payloads)} image items in messages but no images given (neither images= nor "
          f"an 'image' value in every image item)"
        )
      return list(payloads)
    if isinstance(images, (Image.Image, np.ndarray)) or not isinstance(images, Sequence):
      raise TypeError(f"images must be a list of images, got {type(images).__name__}")
    if any(p is not None for p in payloads):
      raise ValueError("images given both in images= and inside the messages; use one")
    if len(images) != len(payloads):
      raise ValueError(f"messages have {len(payloads)} image items but {len(images)} images were given")
    return list(images)

  def _encode_rendered(self, text: str, images: list) -> dict[str, np.ndarray]:
    ids = self.encode_text(text)
    ids_of = self.token_ids
    if np.any(ids == ids_of.video_token_id):
      raise ValueError("text contains <|video_pad|> but videos are not supported")
    pad_positions = np.flatnonzero(ids == ids_of.image_token_id)
    if len(pad_positions) != len(images):
      raise ValueError(
        f"text has {len(pad_positions)} {IMAGE_TOKEN} tokens but {len(images)} images "
        f"(a literal {IMAGE_TOKEN} in message text counts too)"
      )
    repeats = np.ones(len(ids), dtype=np.int64)
    if images:
      pixel_values, grid_thw = preprocess_images(images, self.image_config)
      repeats[pad_positions] = [num_image_tokens(g, self.image_config.merge_size) for g in grid_thw]
    else:
      pixel_values = np.zeros((0, self.image_config.patch_dim), np.float32)
      grid_thw = np.zeros((0, 3), np.int64)
    ids = np.repeat(ids, repeats)
    return dict(
      input_ids=ids,
      mm_token_type_ids=(ids == ids_of.image_token_id).astype(np.int64),
      pixel_values=pixel_values,
      image_grid_thw=grid_thw,
    )

  def encode_batch(self, conversations, images=None, add_generation_prompt: bool = True) -> dict[str, np.ndarray]:
    """Left-padded batch: input_ids/attention_mask/mm_token_type_ids [B, L]; images concatenated in order.

    `images`: None, or one list of images per conversation.
    """
    if not isinstance(conversations, (list, tuple)) or not conversations:
      raise ValueError("conversations must be a non-empty list of message lists")
    if images is not None and (not isinstance(images, (list, tuple)) or len(images) != len(conversations)):
      raise ValueError("images must be None or one list of images per conversation")
    rows = []
    for b, messages in enumerate(conversations):
      view, payloads = _validated_messages(messages)
      row_images = self._resolve_images(payloads, None if images is None else images[b])
      rows.append(self._encode_rendered(self._render_view(view, add_generation_prompt), row_images))
    length = max(len(r["input_ids"]) for r in rows)
    batch = len(rows)
    input_ids = np.full((batch, length), self.token_ids.pad_token_id, np.int64)
    attention_mask = np.zeros((batch, length), np.int64)
    mm_token_type_ids = np.zeros((batch, length), np.int64)
    for b, r in enumerate(rows):
      n = len(r["input_ids"])
      input_ids[b, length - n :] = r["input_ids"]
      attention_mask[b, length - n :] = 1
      mm_token_type_ids[b, length - n :] = r["mm_token_type_ids"]
    return dict(
      input_ids=input_ids,
      attention_mask=attention_mask,
      mm_token_type_ids=mm_token_type_ids,
      pixel_values=np.concatenate([r["pixel_values"] for r in rows], axis=0),
      image_grid_thw=np.concatenate([r["image_grid_thw"] for r in rows], axis=0),
    )

  def encode(self, messages, images=None, add_generation_prompt: bool = True) -> dict[str, np.ndarray]:
    """One conversation as a batch of 1."""
    return self.encode_batch([messages], None if images is None else [images], add_generation_prompt)

  def encode_segment(
    self, messages, images=None, *, prefix_ends_with: str, add_generation_prompt: bool = True
  ) -> dict[str, np.ndarray]:
    """Token ids (1-D) of `messages` continuing a conversation that is already tokenised (e.g. in a KV cache).

    prefix_ends_with says where the existing tokens stop:
      "text":   inside an assistant turn, after its generated text (the segment starts with <|im_end|>\\n);
      "im_end": after the <|im_end|> token that closed the last turn (the segment starts with \\n);
      "turn":   after a complete "<|im_end|>\\n" (e.g. a segment rendered with add_generation_prompt=False).
    prefix + segment tokenises exactly as the whole conversation does, as long as the generated assistant text
    does not begin with whitespace (it would merge with the "\\n" after "assistant" in a one-shot tokenisation).
    """
    if prefix_ends_with not in _SEGMENT_OPENERS:
      raise ValueError(f"prefix_ends_with must be one of {sorted(_SEGMENT_OPENERS)}, got {prefix_ends_with!r}")
    view, payloads = _validated_messages(messages)
    segment_images = self._resolve_images(payloads, images)
    # A leading system message stops the template from injecting its default one before `messages`.
    anchor = [{"role": "system", "content": ""}]
    head = self._render_view(anchor, add_generation_prompt=False)
    full = self._render_view(anchor + view, add_generation_prompt)
    if not full.startswith(head):
      raise ValueError("chat template does not render messages independently; cannot cut a segment")
    encoded = self._encode_rendered(_SEGMENT_OPENERS[prefix_ends_with] + full[len(head) :], segment_images)
    encoded["attention_mask"] = np.ones_like(encoded["input_ids"])
    return encoded
