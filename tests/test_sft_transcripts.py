"""Synthetic SFT transcripts: protocol-valid, scored at the reward's maximum, wrong routes truly wrong.

Facts come from outside the module under test: maps.walk / is_exact_match / distance_map for what a
route does, the renderer and protocol.Episode for the images, the reward (score_turns) and the format
rules of VRRL_SPEC section 2 for the score.
"""

import dataclasses
import re

import numpy as np
import pytest

from vrrl_jax.tasks import frozenlake
from vrrl_jax.tasks.frozenlake import release_data
from vrrl_jax.tasks.frozenlake import generate, maps, parse, protocol, render
from vrrl_jax.tasks.frozenlake.reward import RewardConfig, score_turns
from vrrl_jax.tasks.frozenlake import transcripts

RELEASED = dataclasses.asdict(RewardConfig.released())
NO_HOLES = {"layout": ["SFF", "FFF", "FFG"], "start_pos": 0, "target_pos": 8}


@pytest.fixture(scope="module")
def train_specs():
  entries = release_data.read_maps(release_data.TRAIN_FILE)
  rng = np.random.default_rng(0)
  picks = rng.choice(len(entries), size=60, replace=False)
  return [maps.parse_spec(entries[int(i)]) for i in picks]


@pytest.fixture(scope="module")
def eval_specs():
  entries = release_data.read_maps(release_data.EVAL_FILE)
  return [maps.parse_spec(e) for e in entries]


def _same_image(a, b):
  return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def _reference_kind(spec, route):
  """What the route does wrong, from maps.walk alone: (kind, 1-based step of the first fault or None)."""
  n_opt = maps.shortest_path_len(spec)
  if maps.is_exact_match(spec, route):
    return "optimal", None
  trace = maps.walk(spec, route)
  if any(trace.off_grid) and any(trace.in_hole):
    return "both", None
  if any(trace.off_grid):
    return "off_grid", trace.off_grid.index(True) + 1
  if any(trace.in_hole):
    return "hole", trace.in_hole.index(True) + 1
  if trace.elf[-1] == spec.target_rc:
    assert len(route) > n_opt
    return "too_long", None
  dist = maps.distance_map(spec)
  cells = [spec.start_rc, *trace.elf]
  if all(dist[b] == dist[a] - 1 for a, b in zip(cells, cells[1:])):
    return "short", None
  return "wanders", None


def _expected_sentence(spec, route):
  kind, step = _reference_kind(spec, route)
  return {
    "off_grid": f"The route leaves the grid at step {step}.",
    "hole": f"The path crosses an ice hole at step {step}.",
    "too_long": f"The path reaches the gift but takes {len(route)} moves; a shorter route exists.",
    "short": "The path ends before the gift.",
  }[kind]


def _check_transcript(t, config=transcripts.TranscriptConfig()):
  spec = t.spec
  n_opt = maps.shortest_path_len(spec)
  parsed = [parse.parse_turn(x) for x in t.turns]
  routes = [p.actions for p in parsed if p.is_route]
  assert routes == list(t.routes)
  assert len(t.turns) == len(t.wrong_kinds) + 2 <= config.max_turns

  # Format rules of VRRL_SPEC section 2, checked on the text directly.
  assert all(p.ok and p.actions for p in parsed)
  assert parsed[0].is_route and not parsed[0].has_think
  assert all(p.is_route and p.has_think for p in parsed[1:-1])
  assert parsed[-1].is_final and not parsed[-1].has_think
  assert [p.is_final for p in parsed].count(True) == 1
  assert parsed[-1].actions == routes[-1]
  assert len(set(routes)) == len(routes)
  # Revisions: THINK then ANSWER, nothing else.
  for text in t.turns[1:-1]:
    assert re.fullmatch(r"<THINK>[^<>]+</THINK><ANSWER>[a-z ]+</ANSWER>", text), text

  # The committed route is optimal; every earlier route is wrong of its stated kind, and the THINK
  # that follows it names the fault at the right step.
  assert maps.is_exact_match(spec, routes[-1])
  for i, (kind, route) in enumerate(zip(t.wrong_kinds, routes[:-1])):
    assert _reference_kind(spec, route)[0] == kind, (spec, route, kind)
    assert len(route) <= n_opt + config.max_extra_moves
    if kind == "too_long":
      assert (len(route) - n_opt) % 2 == 0 and len(route) - n_opt >= 2
    think = re.search(r"<THINK>(.*)</THINK>", t.turns[i + 1]).group(1)
    assert think.startswith(_expected_sentence(spec, route)), (think, route)

  # Images: exactly what the environment shows, and a fresh episode ends with "final".
  assert _same_image(t.map_image, render.render_map(spec, t.style))
  assert len(t.feedback_images) == len(routes)
  for image, route in zip(t.feedback_images, routes):
    assert _same_image(image, render.render_feedback(spec, route, t.style))
  episode = protocol.Episode(spec, max_turns=config.max_turns, style=t.style)
  steps = [episode.step(x) for x in t.turns]
  assert episode.done and episode.reason == protocol.FINAL
  assert all(not s.done for s in steps[:-1])

  # The reward's maximum for the case: format gate passes and the commit is EM.
  for kwargs in (RELEASED, {}):
    score = score_turns(list(t.turns), spec, **kwargs)
    assert score["format"] == pytest.approx(0.1)
    assert score["em"] == 1.0 and score["em_final"] == 1.0
    assert score["em_turn1"] == float(not t.wrong_kinds)
  score = score_turns(list(t.turns), spec, **RELEASED)
  n_rev = len(routes) - 1
  assert score["overall"] == pytest.approx(1.0 + 0.1 * score["reflection"] - 0.01 * n_rev)


def test_drawn_transcripts_on_upstream_training_maps(train_specs):
  rng = np.random.default_rng(1)
  seen = set()
  for spec in train_specs:
    for _ in range(3):
      t = transcripts.make_transcript(spec, rng)
      _check_transcript(t)
      seen.add(len(t.wrong_kinds))
      seen.update(t.wrong_kinds)
  assert {0, 1, 2, "off_grid", "hole", "too_long", "short"} <= seen


def test_every_kind_when_asked(train_specs):
  rng = np.random.default_rng(2)
  for spec in train_specs[:20]:
    for kind in transcripts.WRONG_KINDS:
      try:
        t = transcripts.make_transcript(spec, rng, wrong_kinds=[kind])
      except ValueError:
        # Only allowed when the map really cannot give that kind within the length cap.
        assert _kind_impossible(spec, kind, cap=4), (spec, kind)
        continue
      assert t.wrong_kinds == (kind,)
      _check_transcript(t)
    t = transcripts.make_transcript(spec, rng, wrong_kinds=["too_long", "too_long"])
    _check_transcript(t)
    t = transcripts.make_transcript(spec, rng, wrong_kinds=())
    assert len(t.turns) == 2 and t.wrong_kinds == ()
    _check_transcript(t)


def _kind_impossible(spec, kind, cap):
  """Independent feasibility: BFS from the start over non-hole cells (distance_map is symmetric)."""
  n_opt = maps.shortest_path_len(spec)
  from_start = maps.distance_map(maps.MapSpec(spec.layout, spec.start_pos, spec.start_pos))
  level = spec.level
  cells = [
    (r, c) for r in range(level) for c in range(level) if from_start[r, c] >= 0 and from_start[r, c] + 1 <= n_opt + cap
  ]
  if kind == "short":
    return n_opt < 2
  if kind == "too_long":
    return False
  for r, c in cells:
    for dr, dc in maps.MOVES.values():
      nr, nc = r + dr, c + dc
      inside = 0 <= nr < level and 0 <= nc < level
      if kind == "off_grid" and not inside:
        return False
      if kind == "hole" and inside and spec.is_hole(nr, nc):
        return False
  return True


def test_impossible_kinds_raise(eval_specs):
  one_move = next(s for s in eval_specs if maps.shortest_path_len(s) == 1)
  with pytest.raises(ValueError, match="short"):
    transcripts.make_transcript(one_move, np.random.default_rng(0), wrong_kinds=["short"])
  with pytest.raises(ValueError, match="hole"):
    transcripts.make_transcript(NO_HOLES, np.random.default_rng(0), wrong_kinds=["hole"])
  with pytest.raises(ValueError, match="unknown wrong-route kind"):
    transcripts.make_transcript(NO_HOLES, np.random.default_rng(0), wrong_kinds=["sideways"])
  with pytest.raises(maps.MapSpecError, match="unreachable"):
    transcripts.make_transcript({"layout": ["SH", "HG"], "start_pos": 0, "target_pos": 3}, np.random.default_rng(0))
  with pytest.raises(ValueError, match="turns"):
    transcripts.make_transcript(NO_HOLES, np.random.default_rng(0), wrong_kinds=["too_long"] * 7)
  # Drawn from the mix, a map that cannot give some kinds still gets a valid transcript.
  cfg = transcripts.TranscriptConfig(p_correct_first=0.0)
  for seed in range(20):
    t = transcripts.make_transcript(one_move, np.random.default_rng(seed), cfg)
    assert "short" not in t.wrong_kinds
    _check_transcript(t, cfg)


def test_eval_and_generated_levels(eval_specs):
  rng = np.random.default_rng(3)
  for spec in eval_specs[::50]:  # levels 3..6, optimal lengths from 1
    _check_transcript(transcripts.make_transcript(spec, rng))
  for level, style in ((7, "ood"), (9, "default")):
    cfg = transcripts.TranscriptConfig(style=style, p_correct_first=0.2)
    for _ in range(5):
      spec = generate.generate_map(rng, level)
      _check_transcript(transcripts.make_transcript(spec, rng, cfg), cfg)


def test_long_chains_of_distinct_wrong_routes(train_specs):
  cfg = transcripts.TranscriptConfig(
    p_correct_first=0.0, p_another_wrong=1.0, max_wrong_routes=6, max_turns=protocol.TRAIN_MAX_TURNS
  )
  rng = np.random.default_rng(4)
  lengths = []
  for spec in train_specs[:15]:
    t = transcripts.make_transcript(spec, rng, cfg)
    _check_transcript(t, cfg)
    lengths.append(len(t.wrong_kinds))
  assert max(lengths) == 6


def test_mix_frequencies_follow_the_config(train_specs):
  cfg = transcripts.TranscriptConfig(
    p_correct_first=0.3,
    weight_off_grid=0.1,
    weight_hole=0.4,
    weight_too_long=0.2,
    weight_short=0.3,
    p_another_wrong=0.5,
    max_wrong_routes=2,
    max_extra_moves=40,
  )
  # Maps where every kind is possible (so the draw is not renormalised).
  rich = [s for s in train_specs if not any(_kind_impossible(s, k, 40) for k in transcripts.WRONG_KINDS)]
  assert len(rich) >= 20
  rng = np.random.default_rng(5)
  n = 1200
  firsts, n_correct, n_two = [], 0, 0
  for i in range(n):
    t = transcripts.make_transcript(rich[i % len(rich)], rng, cfg)
    if not t.wrong_kinds:
      n_correct += 1
      continue
    firsts.append(t.wrong_kinds[0])
    n_two += len(t.wrong_kinds) == 2

  def within(count, total, p):  # 4.5 binomial standard deviations
    return abs(count / total - p) <= 4.5 * np.sqrt(p * (1 - p) / total)

  assert within(n_correct, n, 0.3)
  assert within(n_two, len(firsts), 0.5)
  for kind, p in cfg.weights.items():
    assert within(firsts.count(kind), len(firsts), p), (kind, firsts.count(kind), len(firsts))


def test_deterministic_given_seed(train_specs):
  a = transcripts.make_transcripts(train_specs[:10], seed=7)
  b = transcripts.make_transcripts(train_specs[:10], seed=7)
  c = transcripts.make_transcripts(train_specs[:10], seed=8)
  assert [t.turns for t in a] == [t.turns for t in b]
  assert [t.turns for t in a] != [t.turns for t in c]


def test_messages_follow_the_protocol(train_specs):
  t = transcripts.make_transcript(train_specs[0], np.random.default_rng(0), wrong_kinds=["hole"])
  messages = transcripts.to_messages(t)
  assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user", "assistant"]
  assert messages[0]["content"][1] == {"type": "text", "text": protocol.TASK_PROMPT}
  assert _same_image(messages[0]["content"][0]["image"], render.render_map(t.spec))
  for k, route in enumerate(t.routes):
    user = messages[2 + 2 * k]["content"]
    assert user[1] == {"type": "text", "text": protocol.FEEDBACK_TEXT}
    assert _same_image(user[0]["image"], render.render_feedback(t.spec, route))
  assert [m["content"] for m in messages if m["role"] == "assistant"] == list(t.turns)


@pytest.mark.parametrize(
  "bad, match",
  [
    (dict(p_correct_first=1.5), "p_correct_first"),
    (dict(p_another_wrong=-0.1), "p_another_wrong"),
    (dict(weight_hole=-1.0), "weight_hole"),
    (dict(weight_short=float("nan")), "weight_short"),
    (dict(weight_off_grid=0, weight_hole=0, weight_too_long=0, weight_short=0), "all weight"),
    (dict(max_wrong_routes=0), "max_wrong_routes"),
    (dict(max_wrong_routes=7), "max_turns"),
    (dict(max_extra_moves=1), "max_extra_moves"),
    (dict(style="sepia"), "sepia"),
  ],
)
def test_config_validation(bad, match):
  with pytest.raises(ValueError, match=match):
    transcripts.TranscriptConfig(**bad)


def test_config_from_mapping():
  cfg = transcripts.TranscriptConfig.from_mapping({"p_correct_first": 1.0, "weight_hole": 0.0})
  assert cfg.p_correct_first == 1.0
  with pytest.raises(ValueError, match="unknown"):
    transcripts.TranscriptConfig.from_mapping({"p_corect_first": 0.5})
  # All weights 0 is fine when every transcript is correct-first.
  transcripts.TranscriptConfig(p_correct_first=1.0, weight_off_grid=0, weight_hole=0, weight_too_long=0, weight_short=0)


def test_trainer_draws_transcripts_in_the_training_maps_style():
  import pathlib

  from vrrl_jax import experiment, run_config

  config = experiment.load_config(pathlib.Path(__file__).parents[1] / "configs" / "frozenlake_tiny_cpu.py")
  config.data.train_style = "compact"
  assert run_config.transcript_config(config).style == "compact"
  config.sft.transcripts.style = "compact"
  assert run_config.transcript_config(config).style == "compact"
  config.sft.transcripts.style = "default"
  with pytest.raises(ValueError, match="differs from data.train_style"):
    run_config.transcript_config(config)


def test_trainer_can_leave_wrong_routes_out_of_the_loss(train_specs, task_processor):
  import types

  from vrrl_jax import trainer

  proc = task_processor
  exp = types.SimpleNamespace(processor=proc, task=frozenlake)
  tcfg = transcripts.TranscriptConfig(p_correct_first=0.3, max_wrong_routes=2, p_another_wrong=0.5)
  full = trainer.sft_rows(exp, train_specs, np.random.default_rng(5), 12, tcfg)
  masked = trainer.sft_rows(exp, train_specs, np.random.default_rng(5), 12, tcfg, wrong_route_loss=False)
  # The same draws, so the transcripts can be rebuilt to know which turns were wrong.
  rng = np.random.default_rng(5)
  picks = rng.choice(len(train_specs), size=12, replace=True)
  drawn = [transcripts.make_transcript(train_specs[i], rng, tcfg) for i in picks]
  assert {len(t.wrong_kinds) for t in drawn} >= {0, 1, 2}

  decode = proc.tokenizer.decode
  for t, a, b in zip(drawn, full, masked):
    np.testing.assert_array_equal(a.input_ids, b.input_ids)
    dropped = (a.assistant_mask == 1) & (b.assistant_mask == 0)
    assert not ((a.assistant_mask == 0) & (b.assistant_mask == 1)).any()
    n_wrong = len(t.wrong_kinds)
    # What lost its loss is exactly the wrong routes' turns; what kept it, the revisions and the FINAL.
    assert decode(a.input_ids[dropped]) == "".join(f"{text}<|im_end|>" for text in t.turns[:n_wrong])
    assert decode(b.input_ids[b.assistant_mask == 1]) == "".join(f"{text}<|im_end|>" for text in t.turns[n_wrong:])
