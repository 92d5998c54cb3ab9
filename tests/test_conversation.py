"""Whole-conversation encoding: equals the HF processor's one-shot tokenisation, with the right roles."""

import numpy as np
import pytest

from vrrl_jax.data import conversation
from vrrl_jax.tasks.frozenlake import generate
from vrrl_jax.tasks.frozenlake import transcripts


def _hf_processor(tok, image_cfg):
  from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessorPil

  class NoVideo(Qwen2_5_VLProcessor):
    def check_argument_for_proper_class(self, name, arg):
      return None if arg is None else super().check_argument_for_proper_class(name, arg)

  ip = Qwen2VLImageProcessorPil(size={"shortest_edge": image_cfg.min_pixels, "longest_edge": image_cfg.max_pixels})
  return NoVideo(image_processor=ip, tokenizer=tok, video_processor=None, chat_template=tok.chat_template)


def test_matches_hf_one_shot_and_roles(task_processor):
  proc = task_processor
  rng = np.random.default_rng(0)
  spec = generate.generate_maps(4, 1, seed=3)[0]
  tr = transcripts.make_transcript(spec, rng, transcripts.TranscriptConfig(p_correct_first=0.0))
  messages = transcripts.to_messages(tr)
  enc = conversation.encode_conversation(proc, messages)

  hf = _hf_processor(proc.tokenizer, proc.image_config)
  view = [
    {
      "role": m["role"],
      "content": m["content"]
      if isinstance(m["content"], str)
      else [{"type": c["type"], **({"text": c["text"]} if c["type"] == "text" else {})} for c in m["content"]],
    }
    for m in messages
  ]
  text = hf.apply_chat_template(view, tokenize=False, add_generation_prompt=False)
  images = [
    c["image"] for m in messages if not isinstance(m["content"], str) for c in m["content"] if c["type"] == "image"
  ]
  ref = hf(text=[text], images=images, return_tensors="np")
  ref_ids = ref["input_ids"][0]
  # The one-shot text ends with "<|im_end|>\n" after the last turn; ours stops at <|im_end|>.
  assert proc.tokenizer.decode(ref_ids[len(enc.input_ids) :]) == "\n"
  np.testing.assert_array_equal(enc.input_ids, ref_ids[: len(enc.input_ids)])
  np.testing.assert_array_equal(enc.pixel_values, ref["pixel_values"])
  np.testing.assert_array_equal(enc.image_grid_thw, ref["image_grid_thw"])

  # Roles: each assistant turn's decoded tokens are its text + <|im_end|>, in order.
  assert enc.num_turns == len(tr.turns)
  for t, turn_text in enumerate(tr.turns):
    sel = enc.input_ids[enc.turn_index == t]
    assert proc.tokenizer.decode(sel) == turn_text + "<|im_end|>"
  assert np.array_equal(enc.assistant_mask == 1, enc.turn_index >= 0)
  assert not np.any((enc.input_ids == proc.token_ids.image_token_id) & (enc.assistant_mask == 1))


def test_rejects_malformed(task_processor):
  proc = task_processor
  with pytest.raises(ValueError, match="must start"):
    conversation.encode_conversation(proc, [{"role": "assistant", "content": "hi"}])
  with pytest.raises(ValueError, match="assistant content"):
    conversation.encode_conversation(
      proc, [{"role": "user", "content": "q"}, {"role": "assistant", "content": [{"type": "text", "text": "x"}]}]
    )
