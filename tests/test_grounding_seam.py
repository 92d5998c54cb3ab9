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
