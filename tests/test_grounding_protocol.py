"""The pointing protocol: turn parsing, feedback texts and images, every early stop, the budget, both formats."""

import numpy as np
import pytest

from vrrl_jax.tasks.grounding import feedback, parse, protocol, scenes

SPEC = dict(kind="table", style="plain", seed=4, width=252, height=252, question=5)


def tool(x, y):
  call = f'{{"name": "pointing", "arguments": {{"coordinate": [{x}, {y}]}}}}'
  return f"<think>look</think>\n<tool_call>\n{call}\n</tool_call>"


def points(x, y):
  return f'<think>look</think><points x1="{x}" y1="{y}">cell</points>'


def answer(x, y):
  return f"<think>done</think><answer>({x}, {y})</answer>"


def test_in_image_point_gets_the_crop_and_no_text():
  ep = protocol.Episode(SPEC)
  step = ep.step(tool(125, 106))
  assert not step.done and step.reason is None and step.feedback_text is None
  assert ep.crop_side == 84
  scene = ep.images[0]
  expected = feedback.feedback_image(scene, 125, 106, 84)
  assert step.feedback_image.size == (84, 84)
  assert np.array_equal(np.asarray(step.feedback_image), np.asarray(expected))
  assert ep.images == [scene, step.feedback_image] and ep.points == [(125, 106)]
  # The crop is cut from the scene around the point: its corner pixel is the scene's pixel at (83, 64).
  assert tuple(np.asarray(step.feedback_image)[0, 0]) == tuple(np.asarray(scene)[64, 83])


def test_feedback_text_option_rides_with_the_crop():
  ep = protocol.Episode(SPEC, feedback_text="Here is the crop.")
  step = ep.step(tool(10, 10))
  assert step.feedback_text == "Here is the crop." and step.feedback_image is not None


@pytest.mark.parametrize(
  "x, y, text",
  [
    (252, 10, "x is out of image boundary."),
    (-1, 10, "x is out of image boundary."),
    (10, 252, "y is out of image boundary."),
    (10, -5, "y is out of image boundary."),
    (300, -5, "x is out of image boundary. y is out of image boundary."),
  ],
)
def test_off_image_points_get_text_only(x, y, text):
  ep = protocol.Episode(SPEC)
  step = ep.step(tool(x, y))
  assert not step.done and step.feedback_text == text and step.feedback_image is None
  assert len(ep.images) == 1
  assert not ep.step(tool(11, 11)).done  # the episode goes on


@pytest.mark.parametrize(
  "text",
  [
    '<think>a</think><tool_call>{"name": "pointing", "arguments": {"coordinate": [1, 2}</tool_call>',  # bad JSON
    '<think>a</think><tool_call>{"name": "zoom", "arguments": {"coordinate": [1, 2]}}</tool_call>',  # wrong tool
    '<think>a</think><tool_call>{"name": "pointing", "arguments": {"coordinate": [1.5, 2]}}</tool_call>',  # float
    '<think>a</think><tool_call>{"name": "pointing", "arguments": {"coordinate": [1, 2, 3]}}</tool_call>',
    '<think>a</think><tool_call>{"name": "pointing", "arguments": {"coordinate": [1234567, 2]}}</tool_call>',
    "<think>a</think><tool_call></tool_call>",
  ],
)
def test_pointing_without_a_valid_coordinate_gets_the_notice(text):
  ep = protocol.Episode(SPEC)
  step = ep.step(text)
  assert not step.done and step.feedback_text == "No valid pointing extracted from assistant's response."
  assert step.feedback_image is None and ep.points == [None]


@pytest.mark.parametrize(
  "turns, reason",
  [
    ([answer(5, 5)], protocol.FINAL),
    ([tool(5, 5), answer(5, 5)], protocol.FINAL),  # answering the last pointed coordinate is fine
    (["<answer>(5, 5)</answer>"], protocol.NO_THINK),  # no think at all
    ([tool(5, 5), '<think>unclosed <tool_call>{"name": "pointing"}'], protocol.NO_THINK),
    (["<think>hmm</think> I am not sure."], protocol.NO_ACTION),
    (
      ['<think><tool_call>{"name": "pointing", "arguments": {"coordinate": [1, 2]}}</tool_call></think>'],
      protocol.NO_ACTION,
    ),
    ([points(5, 5)], protocol.NO_ACTION),  # the other format does not count
    (["<think>a</think><answer>the Q3 cell</answer>"], protocol.FORMAT_ERROR),
    (["<think>a</think><answer>(5.5, 3)</answer>"], protocol.FORMAT_ERROR),
    ([tool(5, 5), tool(6, 6), tool(5, 5)], protocol.REPEATED_POINT),
    ([tool(300, 5), tool(300, 5)], protocol.REPEATED_POINT),  # off-image repeats count too
  ],
)
def test_early_stops(turns, reason):
  ep = protocol.Episode(SPEC)
  for i, text in enumerate(turns):
    step = ep.step(text)
    assert step.done == (i == len(turns) - 1)
  assert step.reason == reason and ep.reason == reason and ep.done
  assert step.feedback_image is None and step.feedback_text is None
  assert reason in protocol.DONE_REASONS
  with pytest.raises(RuntimeError, match="already ended"):
    ep.step(answer(1, 1))


def test_turn_budget():
  ep = protocol.Episode(SPEC, max_turns=3)
  assert not ep.step(tool(1, 1)).done
  assert not ep.step(tool(2, 2)).done
  last = ep.step(tool(3, 3))
  assert last.done and last.reason == protocol.MAX_TURNS and last.feedback_image is None
  assert len(ep.images) == 3  # the scene and two crops; nothing is rendered after the last turn
  ep = protocol.Episode(SPEC, max_turns=2)
  ep.step(tool(1, 1))
  assert ep.step("<think>a</think><tool_call>nope</tool_call>").reason == protocol.MAX_TURNS
  ep = protocol.Episode(SPEC, max_turns=2)
  ep.step(tool(1, 1))
  assert ep.step(answer(1, 2)).reason == protocol.FINAL  # an answer on the last turn is still final
  assert protocol.TRAIN_MAX_TURNS == 8


def test_points_format():
  ep = protocol.Episode(SPEC, point_format="points")
  step = ep.step(points(20, 30))
  assert not step.done and step.feedback_image is not None and ep.points == [(20, 30)]
  # The last point of a turn counts: the last tag, and within a tag the highest-numbered pair.
  two_tags = '<think>a</think><points x1="40" y1="50">a</points> <points x1="41" y1="51">b</points>'
  assert parse.parse_turn(two_tags, "points").point == (41, 51)
  pairs = "<think>a</think><points x1='1' y1='2' x2=\"60\" y2=\"70\" alt='x'>two</points>"
  assert parse.parse_turn(pairs, "points").point == (60, 70)
  assert ep.step(tool(21, 31)).reason == protocol.NO_ACTION  # a tool call is not a point in this format


def test_last_valid_tool_call_counts():
  text = tool(1, 2) + '\n<tool_call>{"name": "pointing", "arguments": {"coordinate": [7, 8]}}</tool_call>'
  turn = parse.parse_turn(text)
  assert turn.point == (7, 8) and turn.n_calls == 2 and not turn.well_formed
  broken_last = tool(1, 2) + "<tool_call>{oops</tool_call>"
  assert parse.parse_turn(broken_last).point == (1, 2)


def test_well_formed_turns():
  assert parse.parse_turn(tool(3, 4)).well_formed
  assert parse.parse_turn("  " + answer(3, 4) + "\n").well_formed
  assert parse.parse_turn(points(3, 4), "points").well_formed
  assert parse.parse_turn("<THINK>a</THINK><ANSWER>(3,4)</ANSWER>").well_formed  # tags are case-insensitive
  for bad in (
    "x" + answer(3, 4),  # text before <think>
    answer(3, 4) + " done",  # text after the action
    "<think>a</think><think>b</think><answer>(3, 4)</answer>",  # two think blocks
    "<think>a</think><answer>(3, 4)</answer>" + tool(1, 1)[len("<think>look</think>") :],  # answer and call
    "<think>a</think><answer>(3, 4)</answer><answer>(3, 4)</answer>",
    tool(3, 4).replace("look</think>", "look</think> I point:"),
  ):
    assert not parse.parse_turn(bad).well_formed, bad


MALFORMED = [
  "",
  "<think>",
  "</think>",
  "<think></think>",
  "<think>a</think><tool_call>",
  "<think>a</think></tool_call><tool_call>",
  '<think>a</think><tool_call>{"name": "pointing", "arguments": [1, 2]}</tool_call>',
  '<think>a</think><tool_call>{"name": "pointing", "arguments": {"coordinate": "1, 2"}}</tool_call>',
  '<think>a</think><tool_call>{"name": "pointing", "arguments": {"coordinate": [true, 2]}}</tool_call>',
  '<think>a</think><tool_call>{"name": "pointing", "arguments": {"coordinate": [null, 2]}}</tool_call>',
  "<think>a</think><tool_call>" + "[" * 5000 + "</tool_call>",
  "<think>a</think><tool_call>" + "9" * 5000 + "</tool_call>",
  "<think>a</think><answer>(" + "9" * 5000 + ", 1)</answer>",
  "<think>a</think><answer>(1, 2</answer>",
  "<think>a</think><answer></answer>",
  "<think>a</think><points x1=>",
  '<think>a</think><points x1="1">a</points>',
  '<think>a</think><points x1="1" y2="3">a</points>',
  "<think>a</think><points <points>",
  "\x00<think>\ud800</think>\x00",
]


@pytest.mark.parametrize("point_format", parse.POINT_FORMATS)
def test_malformed_text_never_raises(point_format):
  for text in MALFORMED:
    ep = protocol.Episode(SPEC, point_format=point_format)
    step = ep.step(text)
    assert step.done or step.feedback_text is not None or step.feedback_image is not None
    parse.parse_turn(text, point_format)


def test_prompt_and_validation():
  ep = protocol.Episode(SPEC)
  text, image = ep.first_prompt()
  question = scenes.scene_question(SPEC)
  assert text.startswith(question.text) and "252 pixels wide and 252 pixels high" in text
  assert '"coordinate": [x, y]' in text and "<answer>(x, y)</answer>" in text
  assert image is ep.images[0] and image.size == (252, 252)
  assert 'x1="x" y1="y"' in protocol.Episode(SPEC, point_format="points").first_prompt()[0]
  for kwargs in ({"max_turns": 0}, {"max_turns": True}, {"crop_side": 83}, {"point_format": "json"}):
    with pytest.raises(ValueError):
      protocol.Episode(SPEC, **kwargs)
  with pytest.raises(ValueError):
    protocol.Episode({**SPEC, "width": 250})
