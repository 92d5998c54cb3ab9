"""The grounding task through the task seam: its surface, the replay buffer's verdict, the injected roll-in, SFT."""

import pathlib

import numpy as np
import pytest

from vrrl_jax import experiment, rl_loop, run_config, tasks
from vrrl_jax.rl import prefix_buffer as pb
from vrrl_jax.tasks import grounding
from vrrl_jax.tasks.grounding import feedback, parse, scenes, splits, transcripts

CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "grounding_tiny_cpu.py"


@pytest.fixture(scope="module")
def config():
  c = experiment.load_config(CONFIG)
  run_config.validate(c)
  return c


@pytest.fixture(scope="module")
def spec():
  return splits.make_split("train", 1, 5, preset="small")[0]


def test_grounding_is_a_task_and_its_config_is_valid(config):
  assert tasks.load("grounding") is grounding
  assert grounding.episode_options(config)["point_format"] == "tool_call"
  train, evals = grounding.train_examples(config), grounding.eval_examples(config)
  assert len(train) == config.data.train_size and {e.style for e in train} == {grounding.RENDER_STYLE}
  assert {e.split for e in evals} == {"eval_id", "eval_ood"} and len(evals) == 2 * config.eval.examples_per_split
  assert not {scenes.scene_hash(e.spec) for e in train} & {scenes.scene_hash(e.spec) for e in evals}


def test_bad_grounding_config_is_refused_at_startup(config):
  bad = experiment.load_config(CONFIG)
  bad.eval.splits = ("train",)
  with pytest.raises(run_config.ConfigError, match=r"config\.eval: eval split 'train'"):
    run_config.validate(bad)
  bad = experiment.load_config(CONFIG)
  bad.sft.transcripts.point_format = "points"
  with pytest.raises(run_config.ConfigError, match=r"sft\.transcripts\.point_format='points' differs"):
    run_config.validate(bad)
  frozen = experiment.load_config(CONFIG.with_name("frozenlake_tiny_cpu.py"))
  frozen.rl.mode_weights.random_init = 0.5
  with pytest.raises(run_config.ConfigError, match="has no injected roll-in"):
    run_config.validate(frozen)


def test_buffer_verdicts_follow_the_answer(spec):
  question = scenes.scene_question(spec)
  x, y = question.point
  look = parse.format_turn("Looking.", parse.format_call(x, y))
  right = parse.format_turn("Found it.", parse.format_answer(x, y))
  wrong = parse.format_turn("Found it.", parse.format_answer(0, 0))
  assert grounding.prefix_verdict(spec, [look, right], 2) == ("right", None)
  assert grounding.prefix_verdict(spec, [look, wrong], 2) == ("wrong", None)
  assert grounding.prefix_verdict(spec, [right], 2) == (None, "no_route")
  assert grounding.prefix_verdict(spec, [look, look, look, right], 2) == (None, "too_many_routes")
  assert grounding.prefix_verdict(spec, [look, "no think, no answer"], 2) == (None, "no_final")
  assert grounding.read_proposal(look) == (x, y) and grounding.read_proposal(right) is None
  assert grounding.is_correct(spec, (x, y)) and not grounding.is_correct(spec, (0, 0))
  # The same episode through the buffer: stored as a one-look prefix ending with the crop.
  buffer = pb.PrefixBuffer(pb.PrefixBufferConfig(min_size=1), seed=0, task=grounding)
  episode = grounding.new_episode(spec, max_turns=8, style="scene")
  text, image = episode.first_prompt()
  crop = episode.step(look).feedback_image
  counts = buffer.collect(
    [pb.Episode("normal", "final", spec.to_dict(), text, [look, wrong], [""], np.asarray(image), [np.asarray(crop)])],
    step=0,
  )
  assert counts["added_wrong"] == 1
  restored = pb.PrefixBuffer(buffer.config, seed=1, task=grounding)
  restored.load_state_dict(buffer.state_dict())
  (entry,) = restored.entries
  assert entry.spec == spec and entry.assistant_texts == (look,) and entry.is_wrong


def test_injected_roll_in_is_a_one_look_prefix_near_the_target(config, spec):
  cfg = run_config.rollout_config(config, style=grounding.RENDER_STYLE)
  entry = rl_loop.injected_roll_in(grounding, spec, cfg, np.random.default_rng(3), step=7)
  assert entry.num_route_turns == 1 and entry.is_wrong and entry.collection_step == 7
  point = grounding.read_proposal(entry.assistant_texts[0])
  lo, hi = (38, 68)  # 100-180 px scaled by 252 / 672 (prefixes.init_distance_range)
  assert lo <= np.hypot(*np.subtract(point, scenes.scene_question(spec).point)) <= hi
  image, _ = scenes.render_scene(spec)
  expected = feedback.feedback_image(image, *point, feedback.scaled_crop_side(*spec.size))
  np.testing.assert_array_equal(entry.feedback_images[0], np.asarray(expected.convert("RGB")))
  np.testing.assert_array_equal(entry.map_image, np.asarray(image.convert("RGB")))


def test_sft_messages_leave_wrong_looks_out_of_the_loss_on_request(config, spec):
  tcfg = grounding.transcript_config(config)
  rng = np.random.default_rng(0)
  for _ in range(6):
    state = rng.bit_generator.state
    messages = grounding.sft_messages(spec, rng, tcfg, wrong_turn_loss=False)
    rng.bit_generator.state = state
    tr = transcripts.make_transcript(spec, rng, tcfg)
    assistant = [m for m in messages if m["role"] == "assistant"]
    assert [m["content"] for m in assistant] == list(tr.turns)
    assert [m.get("loss", True) for m in assistant] == [False] * tr.n_wrong + [True] * (len(tr.turns) - tr.n_wrong)


def test_the_sampler_continues_episodes_whose_crops_change_size():
  """Pointing turns at the centre, an edge and corners give crops of different sizes (clipped at the borders, then
  the processor's minimum size); one batched continuation takes them all within its buckets, and a second batch of
  other sizes compiles nothing new. The policy is a bigram model: each question's first turn is forced (a pointing
  call), the model closes it, and its next turn ("hello", no <think>) ends the episode."""
  import jax

  import qwen_tiny as qt
  from vrrl_jax.data import processor as processor_lib
  from vrrl_jax.data import tokenizer as tokenizer_lib
  from vrrl_jax.models import Qwen25VLConfig, abstract_params
  from vrrl_jax.sampling import rollout as rollout_lib
  from vrrl_jax.sampling.buckets import Buckets
  from vrrl_jax.sampling.sampler import Sampler

  spec = scenes.parse_spec(dict(kind="table", style="plain", seed=4, width=252, height=252, question=0))
  width, height = spec.size
  turns = {
    name: parse.format_turn("Looking.", parse.format_call(x, y))
    for name, (x, y) in {
      "centre": (126, 126),
      "corner": (0, 0),
      "edge": (251, 126),
      "near_corner": (20, 240),
      "far_corner": (251, 251),
      "top": (126, 5),
    }.items()
  }
  prompt = grounding.new_episode(spec, max_turns=4, style="scene").prompt_text()
  tokenizer = tokenizer_lib.build_tokenizer([prompt] * 20 + list(turns.values()) * 50 + ["hello"] * 50, vocab_size=600)
  ids = tokenizer_lib.special_token_ids(tokenizer)
  chat = processor_lib.ChatProcessor(
    tokenizer, processor_lib.ImageProcessorConfig.qwen2_5_vl(min_pixels=56 * 56, max_pixels=252 * 252)
  )
  raw = qt.tiny_config_dict()
  raw["text_config"]["vocab_size"] = ids.vocab_size
  raw.update(
    image_token_id=ids.image_token_id,
    video_token_id=ids.video_token_id,
    vision_start_token_id=ids.vision_start_token_id,
    vision_end_token_id=ids.vision_end_token_id,
  )
  config = Qwen25VLConfig.from_hf(raw)
  # Bigram weights: after "\n" (the assistant header's end) write "hello", close every turn with <|im_end|>.
  rng = np.random.default_rng(0)
  shapes, _ = abstract_params(config)
  params = jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(np.float32), shapes)
  text = params["language_model"]
  for i in range(config.text.num_hidden_layers):
    text[f"layers_{i}"]["self_attn"]["o_proj"]["kernel"][:] = 0
    text[f"layers_{i}"]["mlp"]["down_proj"]["kernel"][:] = 0
  text["norm"]["scale"][:] = 1
  embed = text["embed_tokens"] = rng.standard_normal(text["embed_tokens"].shape).astype(np.float32)
  normed = embed / np.sqrt(np.mean(embed**2, axis=-1, keepdims=True) + config.text.rms_norm_eps)
  successors = {int(chat.encode_text("\n")[-1]): int(chat.encode_text("hello")[0])}
  hello = chat.encode_text("hello").tolist() + [ids.im_end_id]
  successors.update(zip(hello[:-1], hello[1:]))
  successors[int(chat.encode_text(turns["centre"])[-1])] = ids.im_end_id  # every forced turn ends "</tool_call>"
  lm_head = np.zeros_like(text["lm_head"])
  for token, nxt in successors.items():
    lm_head[:, nxt] += 40.0 * normed[token] / config.text.hidden_size
  text["lm_head"] = lm_head

  sampler = Sampler(config, pad_token_id=ids.pad_token_id, buckets=Buckets(min_batch=4, min_cache=1024))
  cfg = rollout_lib.RolloutConfig(max_turns=4, max_new_tokens=8, max_sequence_len=1024, style="scene")
  crop_side = feedback.scaled_crop_side(width, height)

  def play(names):
    trajectories = rollout_lib.rollout(
      grounding,
      sampler,
      chat,
      params,
      [spec] * len(names),
      1,
      forced_openings=[turns[n] for n in names],
      config=cfg,
      rng=jax.random.key(0),
    )
    for name, t in zip(names, trajectories):
      assert t.turns[0] == turns[name] and t.finish_reason == "no_think", (name, t.turns, t.finish_reason)
      (crop,) = t.feedback_images
      x, y = grounding.read_proposal(turns[name])
      left, top, right, bottom = feedback.crop_box(width, height, x, y, crop_side)
      assert crop.shape == (bottom - top, right - left, 3), name
    return {name: t.image_grid_thw[1].tolist() for name, t in zip(names, trajectories)}

  first = play(["centre", "corner", "edge", "near_corner"])
  compiled = dict(sampler.compile_log.counts)
  second = play(["far_corner", "top", "centre", "corner"])
  print(
    f"crop grids (t, h, w patches): {first | second}; sampler programs after each batch: {compiled}, "
    f"{dict(sampler.compile_log.counts)}"
  )
  assert len({tuple(g) for g in (first | second).values()}) >= 3  # the crops really differ in size
  assert sampler.compile_log.counts == compiled  # other sizes, same buckets: nothing new compiled


def test_gallery_image_marks_the_target_box_and_every_point(spec):
  image, _ = scenes.render_scene(spec)
  x1, y1, x2, y2 = scenes.scene_question(spec).box
  look = parse.format_turn("Looking.", parse.format_call(40, 200))
  marked = np.asarray(grounding.gallery_image(spec, np.asarray(image), [look, "no point here"]))
  assert tuple(marked[y1, (x1 + x2) // 2]) == (0, 160, 0)  # the box's top edge
  assert tuple(marked[200, 40 + 4]) == (220, 0, 0)  # the ring around the first turn's point
  np.testing.assert_array_equal(
    marked[y1 + 3 : y2 - 3, x1 + 3 : x2 - 3], np.asarray(image)[y1 + 3 : y2 - 3, x1 + 3 : x2 - 3]
  )
  from vrrl_jax.tasks import frozenlake

  assert frozenlake.gallery_image({}, image, []) is image  # FrozenLake's card shows the map as the model saw it
