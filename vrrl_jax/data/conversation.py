"""A whole multi-turn conversation as one token sequence with per-token roles, for teacher forcing (SFT) and for
recomputing log-probs of rollouts.

The sequence is built the way the sampler builds it (prompt with the generation prompt, then for each assistant
turn its text and ``<|im_end|>``, then the next user turn as a continuation segment), so that what the trainer
scores is exactly what the sampler produced. A test checks it equals the one-shot tokenisation of the
conversation.

Roles per token: ``assistant_mask`` is 1 on the tokens the policy produces (the turn's text and its closing
``<|im_end|>``, which is how the model learns to stop); ``turn_index`` is the assistant turn (0-based) of
those tokens and -1 elsewhere; everything else (system, user text, images, chat markers) is environment.

An assistant message may start with a ``"prefill"``: text the environment wrote into the turn before the model
continued it (ViGoRL's forced final answer). Its tokens are environment tokens, encoded on their own as the rollout
encodes a forced opening, so SFT and RL see the same split.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

# Where an environment text puts its image (ViGoRL's observation turn: "...:\n<image></observation>").
IMAGE_PLACEHOLDER = "<image>"


def user_message(image, text: str | None) -> dict:
  """A user turn with at most one image: at ``IMAGE_PLACEHOLDER`` when the text holds it (once), else before the
  text. ``image`` None: text only; ``text`` None or empty: the image only."""
  text = text or ""
  if text.count(IMAGE_PLACEHOLDER) > 1:
    raise ValueError(f"a user turn holds one image; the text has {text.count(IMAGE_PLACEHOLDER)} {IMAGE_PLACEHOLDER}")
  if IMAGE_PLACEHOLDER in text and image is None:
    raise ValueError(f"the text places an image ({IMAGE_PLACEHOLDER}) but none is given: {text!r}")
  before, _, after = text.partition(IMAGE_PLACEHOLDER) if IMAGE_PLACEHOLDER in text else ("", "", text)
  parts = [{"type": "text", "text": before}] if before else []
  if image is not None:
    parts.append({"type": "image", "image": image})
  if after:
    parts.append({"type": "text", "text": after})
  return {"role": "user", "content": parts}


@dataclasses.dataclass
class EncodedConversation:
  input_ids: np.ndarray  # [S] int64
  assistant_mask: np.ndarray  # [S] int32
  turn_index: np.ndarray  # [S] int32, -1 outside assistant turns
  pixel_values: np.ndarray  # [patches, patch_dim] float32, images in order of appearance
  image_grid_thw: np.ndarray  # [n_images, 3] int64

  @property
  def num_turns(self) -> int:
    return int(self.turn_index.max()) + 1 if self.turn_index.size and self.turn_index.max() >= 0 else 0


def encode_conversation(processor, messages: Sequence[dict[str, Any]]) -> EncodedConversation:
  """``messages``: HF chat messages (images inline as ``{"type": "image", "image": ...}``), starting with the
  user/system prompt and alternating assistant / user after it; assistant contents are strings, and an assistant
  message with ``"loss": False`` stays in the context with its turn index but carries no loss. The sequence
  ends after the last assistant turn's ``<|im_end|>`` (or with the generation prompt when the last message is a
  user turn)."""
  messages = list(messages)
  first_assistant = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
  if first_assistant == 0:
    raise ValueError("conversation must start with a user (or system) message, not an assistant turn")
  prompt = processor.encode(messages[:first_assistant], add_generation_prompt=True)
  ids = [prompt["input_ids"][0]]
  roles = [np.zeros(ids[0].shape, np.int32)]
  turns = [np.full(ids[0].shape, -1, np.int32)]
  pixels = [prompt["pixel_values"]]
  grids = [prompt["image_grid_thw"]]
  im_end = processor.token_ids.im_end_id

  turn = 0
  i = first_assistant
  while i < len(messages):
    msg = messages[i]
    if msg.get("role") != "assistant":
      raise ValueError(f"message {i}: expected an assistant turn, got role {msg.get('role')!r}")
    if not isinstance(msg.get("content"), str):
      raise ValueError(f"message {i}: assistant content must be a string")
    content, prefill = msg["content"], msg.get("prefill", "")
    if not isinstance(prefill, str) or not content.startswith(prefill) or (prefill and content == prefill):
      raise ValueError(f"message {i}: prefill {prefill!r} must be a str that starts the content and is not all of it")
    if prefill:
      opening = processor.encode_text(prefill).astype(np.int64)
      ids.append(opening)
      roles.append(np.zeros(opening.shape, np.int32))
      turns.append(np.full(opening.shape, -1, np.int32))
    text = processor.encode_text(content[len(prefill) :])
    piece = np.concatenate([text, [im_end]]).astype(np.int64)
    ids.append(piece)
    roles.append(np.full(piece.shape, int(msg.get("loss", True)), np.int32))
    turns.append(np.full(piece.shape, turn, np.int32))
    turn += 1
    i += 1
    users = []
    while i < len(messages) and messages[i].get("role") != "assistant":
      users.append(messages[i])
      i += 1
    if users:
      seg = processor.encode_segment(users, prefix_ends_with="im_end", add_generation_prompt=True)
      ids.append(seg["input_ids"])
      roles.append(np.zeros(seg["input_ids"].shape, np.int32))
      turns.append(np.full(seg["input_ids"].shape, -1, np.int32))
      pixels.append(seg["pixel_values"])
      grids.append(seg["image_grid_thw"])
  return EncodedConversation(
    input_ids=np.concatenate(ids).astype(np.int64),
    assistant_mask=np.concatenate(roles),
    turn_index=np.concatenate(turns),
    pixel_values=np.concatenate(pixels, axis=0).astype(np.float32),
    image_grid_thw=np.concatenate(grids, axis=0).astype(np.int64),
  )
