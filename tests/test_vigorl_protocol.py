"""ViGoRL's protocols (GROUNDING_SPEC section 2) on a stand-in scene generator: the crop window and dot in pixels, the
episode rules (forced answer on the last image, bad calls, budgets), the scorer each protocol calls, the SFT
transcripts, and a rollout of a 3-crop episode (a scripted sampler writes the turns) whose loss mask decodes to
exactly the assistant turns.

The stand-in generator (``FAKE``) is a few lines here so that these tests do not depend on the real generators'
looks: a 112 x 112 image whose pixel (x, y) is (x, y, 77), one target box and two distractors.
"""

import types

import jax
import numpy as np
import pytest
from PIL import Image

from vrrl_jax import rl_loop
from vrrl_jax.data import conversation
from vrrl_jax.data import processor as processor_lib
from vrrl_jax.data import tokenizer as tokenizer_lib
from vrrl_jax.rl.prefix_buffer import PrefixEntry
from vrrl_jax.sampling import rollout as rollout_lib
from vrrl_jax.sampling.sampler import STOP
from vrrl_jax.tasks import vigorl
from vrrl_jax.tasks.vigorl import crop as crop_lib
from vrrl_jax.tasks.vigorl import protocol, reward, transcripts
from vrrl_jax.tasks.vigorl import spec as spec_lib
from vrrl_jax.tasks.vigorl.scene import Element, Scene

SIDE = 112
TARGET_BOX = (60, 20, 69, 29)


def _coordinate_image(width=SIDE, height=SIDE) -> Image.Image:
  x, y = np.meshgrid(np.arange(width), np.arange(height))
  return Image.fromarray(np.stack([x, y, np.full_like(x, 77)], -1).astype(np.uint8))


def _fake_scene(style, seed, width, height, question):
  del style, seed
  answer_type = "point" if question == "locate" else "string"
  target = Element("the red star", TARGET_BOX)
  others = (Element("a blue circle", (10, 80, 19, 89)), Element("a green square", (90, 90, 99, 99)))
  return Scene(_coordinate_image(width, height), "Where?", answer_type, "red", TARGET_BOX, target, others, "{}")


FAKE = types.SimpleNamespace(
  KIND="fake",
  ID_STYLES=("plain",),
  OOD_STYLES=("dark",),
  QUESTIONS=("locate", "color"),
  COLORS=("red", "blue", "green"),
  SIZES={"small": {"id": ((SIDE, SIDE),), "ood": ((SIDE, SIDE),)}},
  scene=_fake_scene,
)


@pytest.fixture(autouse=True)
def fake_generator(monkeypatch):
  monkeypatch.setitem(spec_lib.GENERATORS, "fake", FAKE)


def _spec(question="color", style="plain"):
  return spec_lib.parse_spec(
    dict(
      kind="fake", style=style, seed=1, width=SIDE, height=SIDE, question=question, view_width=SIDE, view_height=SIDE
    )
  )


LOOK = "<think> look </think>\n" + protocol.format_call(61, 23)
AFTER_FORCED = "red</answer>"


def _call(x, y):
  return f"<think> look at ({x}, {y}) </think>\n" + protocol.format_call(x, y)


# --- The crop ---------------------------------------------------------------------------------------------------


def test_crop_window_is_clipped_not_shifted():
  assert crop_lib.original_window((SIDE, SIDE), (SIDE, SIDE), 50, 60, 14) == (36, 46, 64, 74)
  assert crop_lib.original_window((SIDE, SIDE), (SIDE, SIDE), 5, 108, 14) == (0, 94, 19, 112)
  # Outside the image: clipped, then widened to one pixel (upstream's rule).
  assert crop_lib.original_window((SIDE, SIDE), (SIDE, SIDE), 200, -50, 14) == (186, 0, 187, 1)
  # An original twice the view: the same window in original pixels.
  assert crop_lib.original_window((SIDE, SIDE), (2 * SIDE, 2 * SIDE), 50, 60, 14) == (72, 92, 128, 148)


def test_crop_pixels_without_resize_are_the_window():
  image = _coordinate_image()
  out = np.asarray(crop_lib.zoom_crop(image, (SIDE, SIDE), (50, 60), offset=14, crop_size=28, multiple=28, dot=False))
  assert out.shape == (28, 28, 3)
  assert out[0, 0].tolist() == [36, 46, 77] and out[27, 27].tolist() == [63, 73, 77]


def test_crop_dot_at_the_point_with_white_outline_and_at_borders():
  image = Image.new("RGB", (SIDE, SIDE), (0, 0, 0))
  out = np.asarray(crop_lib.zoom_crop(image, (SIDE, SIDE), (50, 60), offset=14, crop_size=28, multiple=28, dot=True))
  assert out[14, 14].tolist() == [255, 0, 0]  # the point is at (x - left, y - top) = (14, 14)
  # Radius 7, outline width 2 drawn inside the circle's box (Pillow's ellipse): white at distance 6-7, red within.
  assert out[14, 14 + 5].tolist() == [255, 0, 0] and out[14 + 5, 14].tolist() == [255, 0, 0]
  assert out[14, 14 + 7].tolist() == [255, 255, 255] and out[14 - 7, 14].tolist() == [255, 255, 255]
  assert out[14, 14 + 8].tolist() == [0, 0, 0]  # beyond the dot
  # At the top-left corner the window starts at 0: the dot sits at the point itself.
  corner = crop_lib.zoom_crop(image, (SIDE, SIDE), (3, 3), offset=14, crop_size=28, multiple=28, dot=False)
  assert corner.size == (28, 28)
  cut = image.crop((0, 0, 17, 17))
  ImageDraw = __import__("PIL.ImageDraw", fromlist=["ImageDraw"])
  ImageDraw.Draw(cut).ellipse((3 - 7, 3 - 7, 3 + 7, 3 + 7), fill=(255, 0, 0), outline=(255, 255, 255), width=2)
  dotted = crop_lib.zoom_crop(image, (SIDE, SIDE), (3, 3), offset=14, crop_size=28, multiple=28, dot=True)
  np.testing.assert_array_equal(np.asarray(dotted), np.asarray(cut.resize((28, 28), Image.Resampling.BICUBIC)))


def test_crop_size_is_rounded_to_the_processor_multiple():
  assert crop_lib.rounded_crop_size(512, 28) == 504 and crop_lib.rounded_crop_size(512, 32) == 512
  assert crop_lib.rounded_crop_size(672, 28) == 672 and crop_lib.rounded_crop_size(384, 28) == 392
  out = crop_lib.zoom_crop(
    _coordinate_image(), (SIDE, SIDE), (50, 60), offset=20, crop_size=100, multiple=28, dot=False
  )
  assert out.size == (112, 112)


# --- The episode ----------------------------------------------------------------------------------------------------

CROP = protocol.CropSettings(offset=14, crop_size=56, dot=True, multiple=28)


def test_observation_text_is_upstreams():
  assert protocol.observation_text(True) == (
    "<observation>\nHere is the crop of the image centered on the coordinate, with a red dot at the coordinate "
    "location:\n<image></observation>"
  )
  assert protocol.observation_text(False) == (
    "<observation>\nHere is the crop of the image centered on the coordinate:\n<image></observation>"
  )


def test_forced_answer_comes_with_the_last_image():
  episode = protocol.Episode(_spec(), protocol=protocol.MULTI_TURN, crop=CROP)
  for turn in range(4):
    step = episode.step(_call(10 + 20 * turn, 50))
    assert not step.done and step.feedback_image.size == (56, 56)
    assert step.feedback_text == protocol.OBSERVATION_DOT
    assert step.next_opening == (protocol.FORCED_ANSWER if turn == 3 else None)
  assert len(episode.images) == 5
  step = episode.step(protocol.FORCED_ANSWER + "red</answer>")
  assert step.done and step.reason == protocol.FINAL


def test_a_smaller_round_budget_forces_the_answer_before_it():
  episode = protocol.Episode(_spec(), protocol=protocol.MULTI_TURN, crop=CROP, max_turns=3)
  assert episode.step(_call(10, 10)).next_opening is None
  assert episode.step(_call(30, 10)).next_opening == protocol.FORCED_ANSWER


@pytest.mark.parametrize(
  "text, reason",
  [
    ("<think> x </think>\n<answer>red</answer>", protocol.FINAL),
    ("<think> x </think>\nno action", protocol.NO_ACTION),
    ("<think> x </think>\n<answer>red", protocol.NO_ACTION),  # an unclosed answer is no answer
    ('<think> x </think>\n<tool_call>\n{"coordinate": [1, 2}\n</tool_call>', protocol.BAD_CALL),
    ('<tool_call>{"name": "search_coordinate", "arguments": {"coordinate": [1.5, 2]}}</tool_call>', protocol.BAD_CALL),
    ('<tool_call>{"name": "search_coordinate", "arguments": {"coordinate": [1, 2, 3]}}</tool_call>', protocol.BAD_CALL),
    ('<tool_call>{"name": "search_coordinate", "arguments": {"coordinate": [true, 2]}}</tool_call>', protocol.BAD_CALL),
    ("<answer>red</answer> then <tool_call>x</tool_call>", protocol.FINAL),  # the first closing tag decides
  ],
)
def test_turn_endings(text, reason):
  episode = protocol.Episode(_spec(), protocol=protocol.MULTI_TURN, crop=CROP)
  step = episode.step(text)
  assert step.done and step.reason == reason


def test_a_call_at_the_last_round_ends_without_a_crop():
  episode = protocol.Episode(_spec(), protocol=protocol.MULTI_TURN, crop=CROP, max_turns=2, max_images=5)
  episode.step(_call(10, 10))
  step = episode.step(_call(20, 20))
  assert step.done and step.reason == protocol.MAX_TURNS_REASON and len(episode.images) == 2


def test_grounded_thinking_is_one_turn():
  episode = protocol.Episode(_spec(), protocol=protocol.GROUNDED_THINKING, crop=CROP)
  step = episode.step("<think> (64, 24) is the star </think>\n<answer>red</answer>")
  assert step.done and step.reason == protocol.FINAL
  assert protocol.cited_points(episode.turns[0]) == [(64, 24)]


# --- The reward: which scorer, on which stream ----------------------------------------------------------------------


def test_multi_turn_string_reward_with_the_exploration_bonus():
  config = reward.RewardConfig(protocol=protocol.MULTI_TURN, dot=True)
  one_look = [_call(64, 24), "<think> red </think>\n<answer>red</answer>"]
  assert reward.score_turns(one_look, _spec(), config) == {"overall": 1.0, "format": 1.0, "accuracy": 1.0}
  # Two looks 20 px apart: format 1.2, overall 0.6 * 1 + 0.4 * 1.2.
  two_looks = [_call(44, 24), _call(64, 24), "<think> red </think>\n<answer>Red</answer>"]
  got = reward.score_turns(two_looks, _spec(), config)
  assert got["format"] == pytest.approx(1.2) and got["overall"] == pytest.approx(1.08) and got["accuracy"] == 1.0
  # A look, then a forced answer with a wrong word: format 1, accuracy 0.
  forced = [_call(64, 24), protocol.FORCED_ANSWER + "blue</answer>"]
  assert reward.score_turns(forced, _spec(), config) == {"overall": 0.4, "format": 1.0, "accuracy": 0.0}
  # Ending on a call (no answer) fails the format.
  assert reward.score_turns([_call(64, 24)], _spec(), config)["format"] == 0.0


def test_point_rewards_use_the_view_box():
  multi = reward.RewardConfig(protocol=protocol.MULTI_TURN)
  turns = [_call(64, 24), "<think> there </think>\n<answer>(69, 29)</answer>"]
  assert reward.score_turns(turns, _spec("locate"), multi)["accuracy"] == 1.0
  turns = [_call(64, 24), "<think> there </think>\n<answer>(70, 29)</answer>"]
  assert reward.score_turns(turns, _spec("locate"), multi)["accuracy"] == 0.0
  single = reward.RewardConfig(protocol=protocol.GROUNDED_THINKING)
  text = "<think> the star at (64, 24) </think>\n<answer>(64, 24)</answer>"
  assert reward.score_turns([text], _spec("locate"), single) == {"overall": 1.0, "format": 1.0, "accuracy": 1.0}
  no_citation = "<think> the star </think>\n<answer>(64, 24)</answer>"
  assert reward.score_turns([no_citation], _spec("locate"), single) == {"overall": 0.5, "format": 0.0, "accuracy": 1.0}
  assert spec_lib.ground_truth(_spec("locate")) == "(60, 20, 69, 29)"


# --- SFT transcripts --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat():
  corpus = ["You are a helpful assistant.", protocol.OBSERVATION_DOT, protocol.FORCED_ANSWER, protocol.WAIT] * 20
  tokenizer = tokenizer_lib.build_tokenizer(corpus + [LOOK, AFTER_FORCED] * 50, vocab_size=600)
  image_config = processor_lib.ImageProcessorConfig.qwen2_5_vl(min_pixels=56 * 56, max_pixels=SIDE * SIDE)
  return processor_lib.ChatProcessor(tokenizer, image_config)


def test_user_message_puts_the_image_at_the_placeholder():
  image = _coordinate_image()
  message = conversation.user_message(image, "before\n<image></observation>")
  assert [p["type"] for p in message["content"]] == ["text", "image", "text"]
  assert message["content"][0]["text"] == "before\n" and message["content"][2]["text"] == "</observation>"
  assert [p["type"] for p in conversation.user_message(image, "prompt")["content"]] == ["image", "text"]
  with pytest.raises(ValueError, match="none is given"):
    conversation.user_message(None, "<image>")


def _assistant_text(chat, encoded) -> str:
  return chat.tokenizer.decode(encoded.input_ids[encoded.assistant_mask == 1].tolist(), skip_special_tokens=False)


@pytest.mark.parametrize("wrong_first", [0.0, 1.0])
def test_multi_turn_transcript_masks_only_what_the_model_writes(chat, wrong_first):
  config = transcripts.TranscriptConfig(
    p_wrong_first=wrong_first, p_another_wrong=1.0, max_wrong=2, offset=14, crop_size=56, dot=True, max_images=4
  )
  messages = transcripts.make_messages(_spec(), np.random.default_rng(0), config)
  assistants = [m for m in messages if m["role"] == "assistant"]
  observations = [m for m in messages[1:] if m["role"] == "user"]
  assert len(observations) == len(assistants) - 1 == (3 if wrong_first else 1)
  if wrong_first:  # two wrong looks and the right one fill max_images=4: the answer is forced
    assert assistants[-1]["prefill"] == protocol.FORCED_ANSWER and assistants[-1]["content"].endswith("red</answer>")
    assert (
      protocol.WAIT in assistants[1]["content"]
      and "a blue circle" in assistants[1]["content"] + assistants[2]["content"]
      or "a green square" in assistants[1]["content"]
    )
  encoded = conversation.encode_conversation(chat, messages)
  expected = "".join(m["content"][len(m.get("prefill", "")) :] + "<|im_end|>" for m in assistants)
  assert _assistant_text(chat, encoded) == expected
  assert len(encoded.image_grid_thw) == 1 + len(observations)
  assert reward.score_turns([m["content"] for m in assistants], _spec(), reward.RewardConfig(dot=True))["accuracy"] == 1


def test_grounded_thinking_transcript_cites_every_look(chat):
  config = transcripts.TranscriptConfig(p_wrong_first=1.0, p_another_wrong=0.0, protocol=protocol.GROUNDED_THINKING)
  messages = transcripts.make_messages(_spec("locate"), np.random.default_rng(1), config)
  (text,) = [m["content"] for m in messages if m["role"] == "assistant"]
  points = protocol.cited_points(text)
  assert len(points) == 2 and points[-1] == (64, 24) and protocol.WAIT in text
  scored = reward.score_turns([text], _spec("locate"), reward.RewardConfig(protocol=protocol.GROUNDED_THINKING))
  assert scored == {"overall": 1.0, "format": 1.0, "accuracy": 1.0}


def test_truncated_samples_carry_no_loss():
  mask = np.ones((4, 3), np.float32)
  out = rl_loop.without_truncated(mask, [False, True, False])
  np.testing.assert_array_equal(out[:, 0], [1, 0, 1, 1])


# --- A rollout: 3 crops, then the forced answer ---------------------------------------------------------------------


class ScriptedSampler:
  """Stands in for the model: each turn writes LOOK (the first three) or AFTER_FORCED, then <|im_end|>. It records
  the continuation segments the driver hands it."""

  def __init__(self, chat, script=(LOOK, LOOK, LOOK, AFTER_FORCED), trailing=""):
    self.chat, self.script, self.turns, self.segments, self.rewinds = chat, script, {}, [], []
    self.trailing = trailing  # text written after each turn's own text (past a stop string)

  def _turn(self, sample_ids):
    tokens = []
    for s in sample_ids:
      n = self.turns.get(s, 0)
      self.turns[s] = n + 1
      text = self.script[n] + self.trailing
      tokens.append(np.append(self.chat.encode_text(text), self.chat.token_ids.im_end_id).astype(np.int32))
    return types.SimpleNamespace(
      sample_ids=list(sample_ids),
      tokens=tokens,
      log_probs=[np.zeros(len(t), np.float32) for t in tokens],
      finish_reasons=[STOP] * len(tokens),
    )

  def start(self, params, prompts, sampling, rng, *, n_per_prompt, max_new_tokens):
    return None, self._turn(range(len(prompts) * n_per_prompt))

  def extend(self, params, state, continuing, segments, sampling, rng, *, max_new_tokens):
    self.segments.extend(segments)
    return None, self._turn(continuing)

  def rewind(self, state, sample_ids, num_tokens):
    self.rewinds.append((list(sample_ids), list(num_tokens)))
    return state


def test_rollout_of_three_crops_masks_exactly_the_assistant_turns(chat):
  sampler = ScriptedSampler(chat)
  options = dict(protocol=protocol.MULTI_TURN, offset=14, crop_size=56, dot=True, max_images=4, multiple=28)
  rollout_config = rollout_lib.RolloutConfig(
    max_turns=5, max_new_tokens=64, max_sequence_len=1024, episode_options=tuple(options.items())
  )
  (trajectory,) = rollout_lib.rollout(
    vigorl, sampler, chat, None, [_spec()], 1, config=rollout_config, rng=jax.random.key(0)
  )
  assert trajectory.turns == (LOOK,) * 3 + (protocol.FORCED_ANSWER + AFTER_FORCED,)
  assert trajectory.finish_reason == protocol.FINAL
  # The third observation's segment ends with the forced opening, as environment tokens.
  forced = chat.encode_text(protocol.FORCED_ANSWER).tolist()
  assert sampler.segments[2].input_ids[-len(forced) :].tolist() == forced
  assert not any(seg.input_ids[-len(forced) :].tolist() == forced for seg in sampler.segments[:2])
  assert sum(image is not None for image in trajectory.feedback_images) == 3 and len(trajectory.image_grid_thw) == 4
  masked = chat.tokenizer.decode(trajectory.tokens[trajectory.assistant_mask == 1].tolist(), skip_special_tokens=False)
  assert masked == (LOOK + "<|im_end|>") * 3 + AFTER_FORCED + "<|im_end|>"
  # The whole sequence is the one-shot tokenisation of the conversation the environment saw.
  messages = [conversation.user_message(trajectory.map_image, trajectory.prompt_text)]
  for i, text in enumerate(trajectory.turns):
    messages.append({"role": "assistant", "content": text})
    if i < len(trajectory.feedback_images):
      messages.append(conversation.user_message(trajectory.feedback_images[i], trajectory.feedback_texts[i]))
  whole = chat.encode(messages, add_generation_prompt=False)
  np.testing.assert_array_equal(trajectory.tokens, whole["input_ids"][0])
  np.testing.assert_array_equal(trajectory.pixel_values, whole["pixel_values"])
  scored = vigorl.score_batch([trajectory.turns], [trajectory.spec], reward.RewardConfig(dot=True))
  assert scored["accuracy"][0] == 1.0 and scored["format"][0] == 1.0  # three looks at one point: no bonus


def test_a_turn_ends_at_its_stop_string_and_what_follows_is_dropped(chat):
  """The scripted model writes on past </tool_call> and </answer> (then <|im_end|>): with ViGoRL's stop strings each
  turn keeps its text up to the tag, the rest leaves the sample and the cache (rewound before the next turn), and the
  environment closes the turn, so the sequence is the conversation's own tokenisation."""
  trailing = " Then I will guess the observation."
  sampler = ScriptedSampler(chat, trailing=trailing)
  options = dict(protocol=protocol.MULTI_TURN, offset=14, crop_size=56, dot=True, max_images=4, multiple=28)
  rollout_config = rollout_lib.RolloutConfig(
    max_turns=5,
    max_new_tokens=64,
    max_sequence_len=1024,
    episode_options=tuple(options.items()),
    stop_strings=vigorl.TURN_STOP_STRINGS,
  )
  (trajectory,) = rollout_lib.rollout(
    vigorl, sampler, chat, None, [_spec()], 1, config=rollout_config, rng=jax.random.key(0)
  )
  assert trajectory.turns == (LOOK,) * 3 + (protocol.FORCED_ANSWER + AFTER_FORCED,)
  assert trajectory.turn_finish_reasons == (STOP,) * 4 and not trajectory.truncated
  dropped = len(chat.encode_text(trailing)) + 1  # the trailing text and the model's <|im_end|>
  assert sampler.rewinds == [([0], [dropped])] * 3  # before each of the three continuations
  masked = chat.tokenizer.decode(trajectory.tokens[trajectory.assistant_mask == 1].tolist(), skip_special_tokens=False)
  assert masked == LOOK * 3 + AFTER_FORCED  # <|im_end|> is the environment's now
  messages = [conversation.user_message(trajectory.map_image, trajectory.prompt_text)]
  for i, text in enumerate(trajectory.turns):
    messages.append({"role": "assistant", "content": text})
    if i < len(trajectory.feedback_images):
      messages.append(conversation.user_message(trajectory.feedback_images[i], trajectory.feedback_texts[i]))
  np.testing.assert_array_equal(trajectory.tokens, chat.encode(messages, add_generation_prompt=False)["input_ids"][0])


def test_stop_string_cut_finds_the_token_that_completes_the_first_match(chat):
  tokens = chat.encode_text("<think> a </think><answer>red</answer> and more").astype(np.int32)
  cut = rollout_lib.stop_string_cut(chat.tokenizer, tokens, vigorl.TURN_STOP_STRINGS)
  assert chat.tokenizer.decode(tokens[:cut].tolist()).endswith("</answer>")
  assert "</answer>" not in chat.tokenizer.decode(tokens[: cut - 1].tolist())
  assert rollout_lib.stop_string_cut(chat.tokenizer, tokens[: cut - 1], vigorl.TURN_STOP_STRINGS) is None
  with pytest.raises(ValueError, match="stop_strings"):
    rollout_lib.RolloutConfig(stop_strings=("</answer>", ""))


def test_a_replayed_prefix_that_fills_the_images_forces_the_answer(chat):
  """A buffer prefix of three looks (max_images 4): the environment's forced answer opens the first new turn."""
  options = dict(protocol=protocol.MULTI_TURN, offset=14, crop_size=56, dot=True, max_images=4, multiple=28)
  episode = vigorl.new_episode(_spec(), max_turns=5, style="scene", **options)
  prompt, image = episode.first_prompt()
  steps = [episode.step(LOOK) for _ in range(3)]
  prefix = PrefixEntry(
    spec=_spec(),
    prefix_type="wrong",
    collection_step=0,
    prompt_text=prompt,
    assistant_texts=(LOOK,) * 3,
    feedback_texts=tuple(step.feedback_text for step in steps),
    final_text="",
    map_image=np.asarray(image),
    feedback_images=tuple(np.asarray(step.feedback_image) for step in steps),
  )
  rollout_config = rollout_lib.RolloutConfig(
    max_turns=5, max_new_tokens=64, max_sequence_len=1024, episode_options=tuple(options.items())
  )
  sampler = ScriptedSampler(chat, script=(AFTER_FORCED,))
  (trajectory,) = rollout_lib.rollout(
    vigorl, sampler, chat, None, [_spec()], 1, prefixes=[prefix], config=rollout_config, rng=jax.random.key(0)
  )
  assert trajectory.turns == (LOOK,) * 3 + (protocol.FORCED_ANSWER + AFTER_FORCED,)
  assert trajectory.finish_reason == protocol.FINAL and trajectory.num_prefix_turns == 3
  sampled = chat.tokenizer.decode(trajectory.tokens[trajectory.turn_index == 3].tolist(), skip_special_tokens=False)
  assert sampled == AFTER_FORCED + "<|im_end|>"  # the forced opening is environment
