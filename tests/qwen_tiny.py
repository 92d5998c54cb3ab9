"""Tiny Qwen2.5-VL and Qwen3-VL models for tests: the transformers reference with O(1) activations, and hand-built inputs.

Inputs follow QWEN_VL_NOTES §5.1: random pixel_values of the right shape and input_ids holding
<|vision_start|> + t*h*w/4 <|image_pad|> + <|vision_end|> per image.
"""

from __future__ import annotations

import copy

import numpy as np

IMAGE_TOKEN_ID, VIDEO_TOKEN_ID, VISION_START_ID, VISION_END_ID = 250, 251, 248, 249
PAD_TOKEN_ID = 0
PATCH_DIM = 3 * 2 * 14 * 14

QWEN25_TINY = dict(
  model_type="qwen2_5_vl",
  text_config=dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-6,
    max_position_embeddings=1024,
    hidden_act="silu",
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
  ),
  vision_config=dict(
    depth=4,
    hidden_size=32,
    intermediate_size=48,
    num_heads=2,
    hidden_act="silu",
    in_channels=3,
    patch_size=14,
    temporal_patch_size=2,
    spatial_merge_size=2,
    window_size=56,
    fullatt_block_indexes=[1, 3],
    out_hidden_size=64,
    tokens_per_second=2,
  ),
  image_token_id=IMAGE_TOKEN_ID,
  video_token_id=VIDEO_TOKEN_ID,
  vision_start_token_id=VISION_START_ID,
  vision_end_token_id=VISION_END_ID,
  tie_word_embeddings=False,
)


QWEN3_TINY = dict(
  model_type="qwen3_vl",
  text_config=dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    rms_norm_eps=1e-6,
    max_position_embeddings=1024,
    hidden_act="silu",
    attention_bias=False,
    rope_parameters={
      "rope_type": "default",
      "rope_theta": 5000000.0,
      "mrope_section": [4, 2, 2],
      "mrope_interleaved": True,
    },
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
  ),
  vision_config=dict(
    depth=3,
    hidden_size=32,
    intermediate_size=48,
    num_heads=2,
    hidden_act="gelu_pytorch_tanh",
    in_channels=3,
    patch_size=16,
    temporal_patch_size=2,
    spatial_merge_size=2,
    out_hidden_size=64,
    num_position_embeddings=16,
    deepstack_visual_indexes=[0, 1],
  ),
  image_token_id=IMAGE_TOKEN_ID,
  video_token_id=VIDEO_TOKEN_ID,
  vision_start_token_id=VISION_START_ID,
  vision_end_token_id=VISION_END_ID,
  tie_word_embeddings=False,
)
FAMILIES = ("qwen2_5_vl", "qwen3_vl")
PATCH_DIMS = {"qwen2_5_vl": PATCH_DIM, "qwen3_vl": 3 * 2 * 16 * 16}


def tiny_config_dict(tie_word_embeddings: bool = False, family: str = "qwen2_5_vl") -> dict:
  raw = copy.deepcopy({"qwen2_5_vl": QWEN25_TINY, "qwen3_vl": QWEN3_TINY}[family])
  raw["tie_word_embeddings"] = tie_word_embeddings
  return raw


def build_hf_model(tie_word_embeddings: bool = False, seed: int = 0, family: str = "qwen2_5_vl"):
  """transformers' model of the family (fp32, eval) with O(1)-activation random weights."""
  import torch
  import transformers

  raw = tiny_config_dict(tie_word_embeddings, family)
  if family == "qwen2_5_vl":
    config, cls = transformers.Qwen2_5_VLConfig(**raw), transformers.Qwen2_5_VLForConditionalGeneration
  else:
    config, cls = transformers.Qwen3VLConfig(**raw), transformers.Qwen3VLForConditionalGeneration
  torch.manual_seed(seed)
  model = cls(config).eval()
  reinit(model, seed)
  return model


def build_one_block_hf_model(seed: int, family: str = "qwen2_5_vl"):
  """The family's tiny model cut to one decoder layer and one (full-attention) vision block, for step tests.
  Qwen3-VL keeps two decoder layers: its DeepStack feature is added after layer 0, so with one layer it would reach
  only the image positions' own logits, which carry no loss (its merger's gradient would be exactly zero)."""
  import torch
  import transformers

  raw = tiny_config_dict(family=family)
  raw["text_config"]["num_hidden_layers"] = 1
  if family == "qwen2_5_vl":
    raw["vision_config"].update(depth=1, fullatt_block_indexes=[0])
    config, cls = transformers.Qwen2_5_VLConfig(**raw), transformers.Qwen2_5_VLForConditionalGeneration
  else:
    raw["text_config"]["num_hidden_layers"] = 2
    raw["vision_config"].update(depth=1, deepstack_visual_indexes=[0])
    config, cls = transformers.Qwen3VLConfig(**raw), transformers.Qwen3VLForConditionalGeneration
  torch.manual_seed(seed)
  model = cls(config).eval()
  reinit(model, seed)
  return model


def reinit(model, seed: int) -> None:
  """Weights ~ N(0, 1/fan_in), embeddings ~ N(0, 1), biases ~ N(0, 0.1), norm weights ~ 1 + N(0, 0.1):
  every activation stays O(1), so relative errors are meaningful."""
  import torch

  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, param in model.named_parameters():
      noise = torch.randn(param.shape, generator=generator)
      if name.endswith("embed_tokens.weight"):
        param.copy_(noise)
      elif "norm" in name or "ln_q" in name:
        param.copy_(1.0 + 0.1 * noise)
      elif name.endswith("bias"):
        param.copy_(0.1 * noise)
      else:
        fan_in = int(np.prod(param.shape[1:]))
        param.copy_(noise / np.sqrt(fan_in))


def state_dict_numpy(model) -> dict[str, np.ndarray]:
  return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def random_pixels(grids, rng: np.random.Generator, family: str = "qwen2_5_vl") -> np.ndarray:
  num_patches = int(sum(t * h * w for t, h, w in grids))
  return rng.standard_normal((num_patches, PATCH_DIMS[family])).astype(np.float32)


def image_tokens(grid) -> list[int]:
  t, h, w = grid
  return [VISION_START_ID] + [IMAGE_TOKEN_ID] * (t * h * w // 4) + [VISION_END_ID]


def make_row(rng: np.random.Generator, pieces) -> list[int]:
  """pieces: ints (that many random text tokens) and (t, h, w) tuples (an image)."""
  row = []
  for piece in pieces:
    if isinstance(piece, int):
      row += rng.integers(1, VISION_START_ID, size=piece).tolist()
    else:
      row += image_tokens(piece)
  return row


def left_pad(rows: list[list[int]], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """input_ids and attention_mask [B, length], rows right-aligned (the processor's padding_side='left')."""
  length = length or max(len(r) for r in rows)
  ids = np.full((len(rows), length), PAD_TOKEN_ID, np.int64)
  mask = np.zeros((len(rows), length), np.int64)
  for b, row in enumerate(rows):
    ids[b, length - len(row) :] = row
    mask[b, length - len(row) :] = 1
  return ids, mask


def right_pad(rows: list[list[int]], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  length = length or max(len(r) for r in rows)
  ids = np.full((len(rows), length), PAD_TOKEN_ID, np.int64)
  mask = np.zeros((len(rows), length), np.int64)
  for b, row in enumerate(rows):
    ids[b, : len(row)] = row
    mask[b, : len(row)] = 1
  return ids, mask


def rel_error(ours, ref, valid=None) -> float:
  """max|ours - ref| / max|ref| over valid positions (valid broadcasts against the leading axes)."""
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  if valid is not None:
    valid = np.asarray(valid, bool)
    ours, ref = ours[valid], ref[valid]
  return float(np.abs(ours - ref).max() / np.abs(ref).max())
