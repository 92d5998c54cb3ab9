"""Scripted grounding transcripts: protocol-valid, scored at the reward's maximum, their statements true.

Facts come from outside the module under test: a fresh protocol.Episode replay, the reward (score_turns), the
scene's element boxes and data (labels, values) for what each point is on and where the target is.
"""

import numpy as np
import pytest

from vrrl_jax.tasks.grounding import feedback, parse, protocol, scenes, splits, transcripts
from vrrl_jax.tasks.grounding.reward import RewardConfig, score_turns
from vrrl_jax.tasks.grounding.transcripts import TranscriptConfig


@pytest.fixture(scope="module")
def specs():
  small = splits.make_split("train", 24, 3) + splits.make_split("eval_ood", 9, 3)
  large = splits.make_split("train", 3, 4, preset="large")
  return small + large


def _inside(point, box):
  return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def _position(spec, name):
  """(row, column) of a cell or (0, index) of a bar, from the scene's data."""
  data = scenes.scene_data(spec)
  parts = name.split(":")
  if parts[0] == "cell":
    return data.labels.index(parts[1]), data.columns.index(parts[2])
  return 0, data.labels.index(parts[1])


def _replay(spec, turns, point_format="tool_call"):
  ep = protocol.Episode(spec, point_format=point_format)
  for text in turns:
    step = ep.step(text)
  return ep, step


def test_every_transcript_scores_the_maximum_and_ends_final(specs):
  rng = np.random.default_rng(0)
  config = TranscriptConfig(p_correct_first=0.3, p_another_wrong=0.5)
  shapes = set()
  for spec in specs:
    tr = transcripts.make_transcript(spec, rng, config)
    shapes.add(tr.n_wrong)
    ep, last = _replay(spec, tr.turns)
    assert last.reason == protocol.FINAL and len(ep.turns) == tr.n_wrong + 2
    assert len(tr.feedback_images) == len(tr.turns) - 1 == len(ep.images) - 1
    for mine, theirs in zip(tr.feedback_images, ep.images[1:]):
      assert np.array_equal(np.asarray(mine), np.asarray(theirs))
    assert score_turns(tr.turns, spec)["overall"] == pytest.approx(1.0 - 0.01 * tr.n_wrong)
    m = score_turns(tr.turns, spec, RewardConfig(step_cost=0.05, correct_value=2.0))
    assert m["overall"] == pytest.approx(2.0 - 0.05 * tr.n_wrong) and m["format"] == 0.1
    assert tr.points[-1] == tr.points[-2] == tr.question.point
  assert shapes == {0, 1, 2}


def test_wrong_points_and_their_thinks_are_true(specs):
  rng = np.random.default_rng(1)
  config = TranscriptConfig(p_correct_first=0.0, p_another_wrong=0.5)
  for spec in specs:
    tr = transcripts.make_transcript(spec, rng, config)
    boxes = scenes.elements(spec)
    data = scenes.scene_data(spec)
    target = tr.question.target
    for i, name in enumerate(tr.wrong_elements):
      point = tr.points[i]
      assert _inside(point, boxes[name]) and not _inside(point, tr.question.box)
      think = tr.turns[i + 1].split("</think>")[0]
      if name.startswith("cell:"):
        r, c = _position(spec, name)
        assert f"holding {data.values[r][c]} (row '{data.labels[r]}', column '{data.columns[c]}')" in think
      else:
        assert f"the bar labelled '{name.split(':')[1]}'" in think
      if i + 1 == tr.n_wrong:  # the next point is the target: the direction must be right
        (r0, c0), (r1, c1) = _position(spec, name), _position(spec, target)
        if spec.kind == "table":
          if r1 != r0:
            n = abs(r1 - r0)
            assert f"{n} row{'s' if n > 1 else ''} {'down' if r1 > r0 else 'up'}" in think
          if c1 != c0:
            n = abs(c1 - c0)
            assert f"{n} column{'s' if n > 1 else ''} {'right' if c1 > c0 else 'left'}" in think
        else:
          n = abs(c1 - c0)
          way = ("to the right" if c1 > c0 else "to the left") if spec.kind == "bars" else ("down" if c1 > c0 else "up")
          assert f"{n} bar{'s' if n > 1 else ''} {way}" in think
      else:
        assert "look elsewhere" in think
      if spec.kind != "table":
        # On a bar the point moves towards the label when that brings it into the crop; else it is the centre.
        label = boxes["label:" + name.split(":")[1]]
        left, top, right, bottom = feedback.crop_box(
          spec.width, spec.height, *point, feedback.scaled_crop_side(*spec.size)
        )
        shows_label = left <= label[0] and top <= label[1] and label[2] < right and label[3] < bottom
        assert shows_label or point == scenes.box_center(boxes[name])
    final_think = tr.turns[-1].split("</think>")[0]
    assert "which is what the question asks for" in final_think


def test_points_format_and_fixed_shapes():
  spec = splits.make_split("train", 1, 5, kinds=("table",))[0]
  data = scenes.scene_data(spec)
  target = scenes.scene_question(spec).target
  others = [f"cell:{r}:{c}" for r in data.labels for c in data.columns if f"cell:{r}:{c}" != target]
  config = TranscriptConfig(point_format="points")
  tr = transcripts.make_transcript(spec, np.random.default_rng(0), config, wrong_elements=others[:2])
  assert tr.wrong_elements == tuple(others[:2]) and '<points x1="' in tr.turns[0]
  _, last = _replay(spec, tr.turns, "points")
  assert last.reason == protocol.FINAL
  assert score_turns(tr.turns, spec, RewardConfig(point_format="points"))["overall"] == pytest.approx(0.98)
  first = transcripts.make_transcript(spec, np.random.default_rng(0), wrong_elements=())
  assert first.n_wrong == 0 and len(first.turns) == 2
  assert parse.parse_turn(first.turns[0]).point == scenes.scene_question(spec).point
  for bad in ([target], [others[0], others[0]], ["cell:nope:nope"]):
    with pytest.raises(ValueError):
      transcripts.make_transcript(spec, np.random.default_rng(0), wrong_elements=bad)
  with pytest.raises(ValueError, match="turns"):
    transcripts.make_transcript(
      spec, np.random.default_rng(0), TranscriptConfig(max_turns=4), wrong_elements=others[:3]
    )


def test_same_seed_same_transcripts(specs):
  a = transcripts.make_transcripts(specs[:6], seed=11)
  b = transcripts.make_transcripts(specs[:6], seed=11)
  assert [t.turns for t in a] == [t.turns for t in b]


def test_to_messages_structure():
  spec = splits.make_split("train", 1, 6, kinds=("bars",))[0]
  data = scenes.scene_data(spec)
  target = scenes.scene_question(spec).target
  wrong = [f"bar:{label}" for label in data.labels if f"bar:{label}" != target][:2]
  tr = transcripts.make_transcript(spec, np.random.default_rng(0), wrong_elements=wrong)
  messages = transcripts.to_messages(tr)
  assert [m["role"] for m in messages] == ["user"] + ["assistant", "user"] * 3 + ["assistant"]
  first = messages[0]["content"]
  assert [c["type"] for c in first] == ["image", "text"]
  assert first[0]["image"] is tr.image and first[1]["text"] == tr.prompt
  assert first[1]["text"].startswith(tr.question.text)
  assert [m["content"] for m in messages if m["role"] == "assistant"] == list(tr.turns)
  feedback_turns = [m["content"] for m in messages[2::2]]
  assert all([c["type"] for c in content] == ["image"] for content in feedback_turns)
  assert [c[0]["image"] for c in feedback_turns] == list(tr.feedback_images)
  assert not any("loss" in m for m in messages)
  masked = transcripts.to_messages(tr, wrong_turn_loss=False)
  assert [m.get("loss", True) for m in masked if m["role"] == "assistant"] == [False, False, True, True]


def test_config_validation():
  with pytest.raises(ValueError, match="unknown transcript option"):
    TranscriptConfig.from_mapping({"p_correct": 0.5})
  assert TranscriptConfig.from_mapping({"p_correct_first": 0.5}).p_correct_first == 0.5
  for bad in (
    {"p_correct_first": 1.5},
    {"p_neighbour": -0.1},
    {"max_wrong_points": 0},
    {"max_wrong_points": 7},
    {"max_turns": 3, "max_wrong_points": 2},
    {"point_format": "xml"},
    {"crop_side": 83},
  ):
    with pytest.raises(ValueError):
      TranscriptConfig(**bad)
  with pytest.raises(ValueError, match="Generator"):
    transcripts.make_transcript(splits.make_split("train", 1, 0)[0], 0)


def test_messages_encode_as_a_conversation(task_processor):
  from vrrl_jax.data import conversation

  spec = splits.make_split("train", 1, 8, kinds=("hbars",))[0]
  tr = transcripts.make_transcript(spec, np.random.default_rng(0), TranscriptConfig(p_correct_first=0.0))
  row = conversation.encode_conversation(task_processor, transcripts.to_messages(tr, wrong_turn_loss=False))
  assert row.num_turns == len(tr.turns)
  assert len(row.image_grid_thw) == 1 + len(tr.feedback_images)
