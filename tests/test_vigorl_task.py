"""The ViGoRL task surface on the real generators: splits (disjoint, ID vs OOD), specs and ground truth in view pixels,
transcripts that the reward scores as right, config errors named at startup, the replay-buffer verdict and the
eval aggregate (checked against records counted by hand)."""

import html
import pathlib

import numpy as np
import pytest

from vrrl_jax import experiment, run_config
from vrrl_jax.data import processor as processor_lib
from vrrl_jax.tasks import vigorl
from vrrl_jax.tasks.vigorl import evaluate, gui, protocol, reward, search, splits, transcripts
from vrrl_jax.tasks.vigorl import spec as spec_lib

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
TINY_IMAGES = processor_lib.ImageProcessorConfig.qwen2_5_vl(min_pixels=56 * 56, max_pixels=252 * 252)


def _split(name, n, kind, questions):
  return splits.make_split(name, n, 3, kind=kind, preset="small", questions=questions, image_config=TINY_IMAGES)


@pytest.mark.parametrize("kind, questions", [("search", search.QUESTIONS), ("gui", gui.QUESTIONS)])
def test_splits_are_disjoint_by_content_and_keep_styles_apart(kind, questions):
  train = _split("train", 200, kind, questions)
  eval_id, eval_ood = _split("eval_id", 30, kind, questions), _split("eval_ood", 30, kind, questions)
  module = spec_lib.generator(kind)
  assert {s.style for s in train + eval_id} <= set(module.ID_STYLES)
  assert {s.style for s in eval_ood} <= set(module.OOD_STYLES)
  contents = {
    name: {spec_lib.scene_of(s).content for s in specs}
    for name, specs in (("train", train), ("eval", eval_id + eval_ood))
  }
  assert len(contents["train"]) == len(train)  # distinct within the split
  assert not contents["train"] & contents["eval"]
  # Views are the processor's resize of every size (here everything fits 252 x 252 pixels at most).
  for s in train + eval_ood:
    assert s.view_width * s.view_height <= 252 * 252 and s.view_width % 28 == 0 and s.view_height % 28 == 0
  assert _split("train", 20, kind, questions) == train[:20]  # deterministic


def test_the_view_box_is_the_scene_box_scaled_down():
  (spec,) = [s for s in _split("train", 10, "search", ("color",)) if s.width == 1008][:1]
  x1, y1, x2, y2 = spec_lib.scene_of(spec).box
  # 1008 -> 252: a quarter, the box covering every original pixel (floor the start, ceil the end).
  assert spec_lib.view_box(spec) == (x1 // 4, y1 // 4, -(-(x2 + 1) // 4) - 1, -(-(y2 + 1) // 4) - 1)
  assert spec_lib.ground_truth(spec) == spec_lib.scene_of(spec).answer
  again = spec_lib.parse_spec(spec.to_dict())
  assert again == spec and again.question_id == spec.question_id
  with pytest.raises(ValueError, match="question"):
    spec_lib.parse_spec({**spec.to_dict(), "question": "click"})
  with pytest.raises(ValueError, match="unknown ViGoRL scene kind"):
    spec_lib.parse_spec({**spec.to_dict(), "kind": "maze"})


@pytest.mark.parametrize("proto", protocol.PROTOCOLS)
@pytest.mark.parametrize("kind, questions", [("search", search.QUESTIONS), ("gui", gui.QUESTIONS)])
def test_scripted_transcripts_score_right_and_fit_the_budget(kind, questions, proto):
  config = transcripts.TranscriptConfig(p_wrong_first=0.7, p_another_wrong=0.5, max_wrong=2, protocol=proto, dot=True)
  rng = np.random.default_rng(0)
  for spec in _split("train", 8, kind, questions):
    messages = transcripts.make_messages(spec, rng, config)
    turns = [m["content"] for m in messages if m["role"] == "assistant"]
    scored = reward.score_turns(turns, spec, reward.RewardConfig(protocol=proto, dot=True))
    assert scored["accuracy"] == 1.0 and scored["format"] >= 1.0, (turns, spec)
    if proto == protocol.MULTI_TURN:
      crops = [m for m in messages[1:] if m["role"] == "user"]
      assert len(crops) == len(turns) - 1 <= 3
      assert all(part["image"].size == (252, 252) for m in crops for part in m["content"] if part["type"] == "image")
    else:
      assert len(turns) == 1 and protocol.cited_points(turns[0])


def _tiny_config(name="vigorl_search_tiny_cpu.py"):
  return experiment.load_config(CONFIGS / name)


@pytest.mark.parametrize("name", ["vigorl_search_tiny_cpu.py", "vigorl_gui_tiny_cpu.py"])
def test_tiny_configs_validate(name):
  run_config.validate(_tiny_config(name))


@pytest.mark.parametrize("name", ["vigorl_search_qwen25vl_3b.py", "vigorl_gui_qwen25vl_3b.py"])
def test_released_recipe_configs_hold_vigorls_settings(name):
  """The task's sections as the run reads them (the model side needs the real checkpoint)."""
  config = _tiny_config(name)
  for section, keys in (("rl", run_config.RL_KEYS), ("sft", run_config.SFT_KEYS), ("", run_config.TOP_LEVEL_KEYS)):
    run_config.require_keys(config, section, keys)
  vigorl.data_config(config), vigorl.reward_config(config), vigorl.transcript_config(config)
  assert vigorl.max_image_side(config) == (980 if "search" in name else 1260)
  assert (config.rl.learning_rate, config.rl.samples_per_prompt, config.rl.loss.kl_coef) == (1e-6, 8, 0.01)
  assert tuple(config.optimizer.frozen) == ("visual",) and config.optimizer.grad_clip_norm == 0.2
  assert (config.data.offset, config.data.crop_size, config.data.dot) == (
    (182, 672, False) if "search" in name else (50, 384, True)
  )


@pytest.mark.parametrize(
  "path, value, message",
  [
    ("data.kind", "maze", "unknown ViGoRL scene kind"),
    ("data.questions", ("click",), "questions"),
    ("data.offset", 0, "offset"),
    ("data.protocol", "zoom", "protocol"),
    ("rl.reward", {"step_cost": 0.01}, "must be empty"),
    ("sft.transcripts", {"dot": True}, "differs from the episodes"),
  ],
)
def test_bad_task_config_is_named_at_startup(path, value, message):
  config = _tiny_config()
  section, key = path.split(".")
  config[section][key] = value
  with pytest.raises(run_config.ConfigError, match=message):
    run_config.validate(config)
    vigorl.transcript_config(config)  # transcripts are read when SFT starts; validate reads them too


def test_prefix_verdict_needs_clean_looks_then_an_answer():
  (spec,) = _split("train", 1, "gui", ("click",))
  x1, y1, x2, y2 = spec_lib.view_box(spec)
  look = "<think> t </think>\n" + protocol.format_call(x1, y1)
  right, wrong = f"<think> t </think>\n<answer>({x1}, {y1})</answer>", "<think> t </think>\n<answer>(0, 0)</answer>"
  options = dict(protocol=protocol.MULTI_TURN, dot=True)
  assert vigorl.prefix_verdict(spec, [look, right], 2, **options) == ("right", None)
  assert vigorl.prefix_verdict(spec, [look, wrong], 2, **options) == ("wrong", None)
  assert vigorl.prefix_verdict(spec, [right], 2, **options) == (None, "no_route")
  assert vigorl.prefix_verdict(spec, [look, look, look, right], 2, **options) == (None, "too_many_routes")
  assert vigorl.prefix_verdict(spec, [look, "no"], 2, **options) == (None, "no_final")
  assert vigorl.is_correct(spec, (x2, y2)) and not vigorl.is_correct(spec, (x2 + 1, y2))


def _record(question, ood, correct, format_ok, crops, unique):
  return evaluate.EpisodeRecord(
    "id", "search", question, "s", ood, crops + 1, crops, unique, "final", correct, format_ok, 0.0
  )


def test_aggregate_counts_by_split_and_question():
  records = [
    _record("color", False, True, True, 1, 1),
    _record("color", False, False, True, 2, 2),
    _record("shape", True, False, False, 0, 0),
    _record("shape", True, True, True, 3, 2),
  ]
  metrics = evaluate.aggregate(records)
  assert metrics["overall"]["accuracy"] == 0.5 and metrics["overall"]["format_error_rate"] == 0.25
  assert metrics["overall"]["crops_per_episode"] == 1.5 and metrics["overall"]["unique_coordinates_per_episode"] == 1.25
  assert metrics["in_distribution"]["accuracy"] == 0.5 and metrics["out_of_distribution"]["crops_per_episode"] == 1.5
  assert metrics["by_question"]["color"]["n"] == 2 and metrics["overall"]["finish_final_rate"] == 1.0
  assert evaluate.spread_count([(0, 0), (6, 8), (5, 5), (20, 0)]) == 3  # (5, 5) is 7.1 px from (0, 0)


def test_episode_records_of_a_played_transcript():
  (spec,) = _split("train", 1, "search", ("locate",))
  config = transcripts.TranscriptConfig(p_wrong_first=1.0, p_another_wrong=0.0)
  messages = transcripts.make_messages(spec, np.random.default_rng(2), config)
  turns = [m["content"] for m in messages if m["role"] == "assistant"]
  record = evaluate.episode_record(spec, turns, "final", crops=2, config=reward.RewardConfig(), example_id="x")
  assert record.correct and record.format_ok and record.unique_coordinates == 2 and record.n_turns == 3
  image = vigorl.gallery_image(spec, spec_lib.scene_of(spec).image, turns)
  assert image.size == spec.view_size


def test_the_gallery_shows_every_style_and_the_transcripts_crops(tmp_path):
  from vrrl_jax.tasks.vigorl import gallery

  page = gallery.write_gallery(tmp_path).read_text()
  for kind, module in spec_lib.GENERATORS.items():
    for style in module.ID_STYLES + module.OOD_STYLES:
      assert f"{kind}_{style}_view.png" in page and (tmp_path / f"{kind}_{style}_target.png").is_file()
    assert (tmp_path / f"transcript_{kind}_crop2.png").is_file() and html.escape(protocol.WAIT) in page
