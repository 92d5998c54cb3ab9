"""ViGoRL's four scorers against GROUNDING_SPEC section 2, one case per rule; expected values written by hand."""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vrrl_jax.rewards import vigorl
from vrrl_jax.rewards.vigorl import (
  point_in_bbox_grounded_thinking,
  point_in_bbox_multicrop,
  string_match_grounded_thinking,
  string_match_multiturn,
)

SCORERS = [
  point_in_bbox_multicrop,
  string_match_multiturn,
  point_in_bbox_grounded_thinking,
  string_match_grounded_thinking,
]
MULTITURN = [point_in_bbox_multicrop, string_match_multiturn]
POINT = [point_in_bbox_multicrop, point_in_bbox_grounded_thinking]

OBS = (
  "<observation>\nHere is the crop of the image centered on the coordinate, with a red dot at the coordinate "
  "location:\n<image></observation>"
)
BOX = "(0, 0, 10, 10)"


def call(coordinate: str) -> str:
  """One tool call as ViGoRL's model writes it; ``coordinate`` is the raw JSON text of the coordinate."""
  return f'<tool_call>\n{{"name": "search_coordinate", "arguments": {{"coordinate": {coordinate}}}}}\n</tool_call>'


def episode(*coordinates: str, answer: str = "(5, 5)") -> str:
  """A well-formed multi-turn response: think, (tool call, observation, think) per coordinate, answer."""
  parts = ["<think> Let me look closer. </think>\n"]
  for coordinate in coordinates:
    parts += [call(coordinate), OBS, "<think> Seen. </think>\n"]
  return "".join(parts) + f"<answer>{answer}</answer>"


# ---------------------------------------------------------------- multi-turn format: ending and tag grammar

T, A = "<think>a</think>", "<answer>(1, 2)</answer>"


@pytest.mark.parametrize(
  "response,expected",
  [
    (T + A, 1.0),
    (T + "\n" + A, 1.0),
    ("  \n" + T + A + " \n", 1.0),  # the response is stripped first
    (T + A + "<|im_end|>", 1.0),  # one trailing end-of-turn token is allowed ...
    (T + A + "\n <|im_end|> \n", 1.0),  # ... with whitespace around it
    (T + A + "<|im_end|><|im_end|>", 0.0),  # ... but only one
    (T + A + " Done.", 0.0),  # text after </answer>
    (T + A + "<|endoftext|>", 0.0),
    (T + "<answer>(1, 2)</ANSWER>", 0.0),  # the ending rule is case-sensitive
    ("Sure. " + T + A, 1.0),  # text is not a tag; only the four tag names are scanned
    ("<think>see <thinking> and <image> and <Answer ></think>" + A, 1.0),  # other names are plain text
    ("<THINK>a</Think>" + A, 1.0),  # the grammar lower-cases the tags it scans
    (A, 0.0),  # must open with <think>
    ("<think>a" + A, 0.0),  # think never closed
    ("</think>" + T + A, 0.0),  # stray closing tag first
    (T + T + A, 0.0),  # two thinks in a row
    (T + "<answer><answer>(1, 2)</answer>", 0.0),  # nested answer
    (T + A + T + A, 0.0),  # any tag after the first </answer>
    (T + A + "</answer>", 0.0),
    (T + call("[10, 20]") + T + A, 0.0),  # tool call without its observation
    (T + OBS + T + A, 0.0),  # observation without a tool call
    (T + call("[10, 20]") + OBS + A, 0.0),  # after the observation comes a think, not the answer
    (T + call("[10, 20]") + OBS + T, 0.0),  # ends after a think (and not with </answer>)
    (T + "<tool_call>" + A, 0.0),  # tool call never closed
    ("<think>a</think><answer>(1, 2)", 0.0),
  ],
)
@pytest.mark.parametrize("scorer", MULTITURN)
def test_multiturn_format_grammar(scorer, response, expected):
  assert scorer(response, BOX)["format"] == expected


@pytest.mark.parametrize("scorer", MULTITURN)
def test_upper_case_answer_tag_passes_grammar_but_not_the_answer_rule(scorer):
  # The grammar accepts <ANSWER>, but step 4's answer regexes are case-sensitive.
  assert scorer(T + "<ANSWER>(1, 2)</answer>", BOX)["format"] == 0.0


# ---------------------------------------------------------------- multi-turn format: tool-call JSON


@pytest.mark.parametrize(
  "tool_call,expected",
  [
    (call("[10, 20]"), 1.0),
    (call("[0, 0]"), 1.0),
    (call("[true, 20]"), 1.0),  # JSON true is a Python bool, and bool is an int
    (call("[10.5, 20]"), 0.0),  # float coordinate
    (call("[10.0, 20]"), 0.0),
    (call('["10", "20"]'), 0.0),
    (call("[10]"), 0.0),
    (call("[10, 20, 30]"), 0.0),
    (call("[]"), 0.0),
    (call("[[10, 20]]"), 0.0),
    (call('{"x": 10, "y": 20}'), 0.0),
    (call("null"), 0.0),
    (call("[1e400, 20]"), 0.0),  # overflows to a float infinity
    (call("[" + "9" * 5000 + ", 20]"), 0.0),  # more digits than Python converts: a parse failure
    ('<tool_call>{"name": "search_coordinate", "arguments": {"coordinate": [10, 20]}</tool_call>', 0.0),  # brace lost
    ("<tool_call>{'arguments': {'coordinate': [10, 20]}}</tool_call>", 0.0),  # single quotes are not JSON
    ('<tool_call>{"name": "search_coordinate"}</tool_call>', 0.0),  # no "arguments"
    ('<tool_call>{"arguments": {}}</tool_call>', 0.0),  # no "coordinate"
    ('<tool_call>{"arguments": {"point": [10, 20]}}</tool_call>', 0.0),
    ('<tool_call>{"arguments": [10, 20]}</tool_call>', 0.0),  # arguments not a dict
    ('<tool_call>{"arguments": null}</tool_call>', 0.0),
    ('<tool_call>{"arguments": {"coordinate": [10, 20]}} {"x": 1}</tool_call>', 0.0),  # extra data
    ('<tool_call>{"arguments": {"coordinate": [10, 20]}, "arguments": {"coordinate": [1.5, 2]}}</tool_call>', 0.0),
    ("<tool_call>search the top left</tool_call>", 1.0),  # no {...}: not a regex match, so never checked
    ('<TOOL_CALL>{"arguments": "oops"</TOOL_CALL>', 1.0),  # upper case passes the grammar and skips the JSON rule
  ],
)
def test_tool_call_json_rule(tool_call, expected):
  response = T + tool_call + OBS + T + A
  assert point_in_bbox_multicrop(response, BOX)["format"] == expected
  assert string_match_multiturn(response, "x")["format"] == expected


def test_every_tool_call_is_checked():
  assert point_in_bbox_multicrop(episode("[10, 20]", "[100, 200]"), BOX)["format"] == pytest.approx(1.2)
  assert point_in_bbox_multicrop(episode("[10, 20]", "[100.5, 200]"), BOX)["format"] == 0.0
  assert point_in_bbox_multicrop(episode("[10.5, 20]", "[100, 200]"), BOX)["format"] == 0.0


# ---------------------------------------------------------------- multi-turn format: the answer rule per scorer


@pytest.mark.parametrize(
  "answer,expected",
  [
    ("(12, 22)", 1.0),
    ("( 12 , 22 )", 1.0),
    ("(12, 22,)", 1.0),
    ("\n(12, 22)\n", 1.0),  # \s and [^)] both cross lines
    ("(12,\n22)", 1.0),
    ("(True, 22)", 1.0),  # True is an int
    ("(-3, 22)", 1.0),
    ("(12)", 0.0),  # "(12)" is an int, not a tuple
    ("()", 0.0),
    ("(12, 22, 30)", 0.0),
    ("(12.0, 22)", 0.0),
    ("(1e2, 22)", 0.0),  # 1e2 is a float
    ("([12, 22])", 0.0),  # a list, and the format wants a tuple
    ("((12, 22))", 0.0),  # [^)]* stops at the first ")": "((12, 22)" does not parse
    ("(a, b)", 0.0),
    ("12, 22", 0.0),  # no parentheses: no regex match
    ("[12, 22]", 0.0),
    ("(12, 22) is the point", 0.0),
    ("", 0.0),
  ],
)
def test_multicrop_answer_rule(answer, expected):
  assert point_in_bbox_multicrop(T + f"<answer>{answer}</answer>", BOX)["format"] == expected


@pytest.mark.parametrize(
  "answer,expected",
  [
    ("red", 1.0),
    ("(12, 22)", 1.0),
    ("\n the red car \n", 1.0),
    ("a\nb", 1.0),
    ("", 0.0),
    (" \n\t ", 0.0),
  ],
)
def test_string_multiturn_answer_rule(answer, expected):
  assert string_match_multiturn(T + f"<answer>{answer}</answer>", "red")["format"] == expected


# ---------------------------------------------------------------- multi-turn format: exploration bonus


@pytest.mark.parametrize(
  "coordinates,expected",
  [
    ((), 1.0),
    (("[0, 0]",), 1.0),
    (("[0, 0]", "[0, 0]"), 1.0),  # a repeated point earns nothing
    (("[0, 0]", "[9, 0]"), 1.0),  # 9 px: too close
    (("[0, 0]", "[10, 0]"), 1.2),  # 10 px: kept
    (("[0, 0]", "[6, 8]"), 1.2),  # exactly 10 px (6-8-10): kept
    (("[0, 0]", "[3, 4]"), 1.0),  # 5 px: dropped
    (("[0, 0]", "[6, 8]", "[3, 4]"), 1.2),  # (3, 4) is 5 px from both kept points
    (("[0, 0]", "[3, 4]", "[6, 8]"), 1.2),  # greedy in order: (3, 4) dropped, (6, 8) kept
    (("[0, 0]", "[5, 5]", "[10, 10]"), 1.2),  # (10, 10) is compared with kept points only: 14.1 px from (0, 0)
    (("[0, 0]", "[100, 0]", "[0, 100]"), 1.4),
    (("[0, 0]", "[100, 0]", "[0, 100]", "[100, 100]"), 1.6),
    (("[0, 0]", "[100, 0]", "[0, 100]", "[100, 100]", "[50, 50]"), 1.8),
    (("[0, 0]", "[1" + "0" * 400 + ", 0]"), 1.2),  # a 401-digit coordinate: compared exactly, no float overflow
    (("[0, 0]", "[true, false]"), 1.0),  # (1, 0) is 1 px from (0, 0)
  ],
)
@pytest.mark.parametrize("scorer", MULTITURN)
def test_exploration_bonus(scorer, coordinates, expected):
  assert scorer(episode(*coordinates), BOX)["format"] == pytest.approx(expected)


def test_bonus_counts_only_regex_matched_tool_calls():
  # The upper-case call passes the grammar but is not a match of the (case-sensitive) tool-call regex.
  response = T + call("[0, 0]") + OBS + T + call("[100, 0]").replace("tool_call>", "TOOL_CALL>") + OBS + T + A
  assert point_in_bbox_multicrop(response, BOX)["format"] == 1.0


# ---------------------------------------------------------------- point accuracy (multicrop and grounded thinking)


@pytest.mark.parametrize(
  "answer,truth,expected",
  [
    ("(5, 5)", BOX, 1.0),
    ("(0, 0)", BOX, 1.0),  # edges are inside
    ("(10, 10)", BOX, 1.0),
    ("(0, 10)", BOX, 1.0),
    ("(10, 0)", BOX, 1.0),
    ("(11, 5)", BOX, 0.0),
    ("(5, -1)", BOX, 0.0),
    ("(5, 11)", BOX, 0.0),
    (" (5, 5) ", BOX, 1.0),  # body stripped
    ("(5, 5)", " (0, 0, 10, 10)\n", 1.0),  # truth stripped
    ("(5, 5)", "[0, 0, 10, 10]", 1.0),  # a list truth becomes a tuple
    ("(5, 5)", "0, 0, 10, 10", 1.0),  # so does a bare tuple
    ("(5, 5)", "(0, 0, 10)", 0.0),  # truth not 4 ints
    ("(5, 5)", "(0, 0, 10, 10, 10)", 0.0),
    ("(5, 5)", "(0.0, 0, 10, 10)", 0.0),
    ("(5, 5)", "(0, 0, 1e1, 10)", 0.0),
    ("(5, 5)", "10", 0.0),  # tuple(10) fails
    ("(5, 5)", "the box", 0.0),
    ("(5, 5)", "", 0.0),
    ("(5.0, 5)", BOX, 0.0),  # prediction not 2 ints
    ("(1e0, 5)", BOX, 0.0),
    ("(5, 5, 5)", BOX, 0.0),
    ("5", BOX, 0.0),
    ("(5)", BOX, 0.0),
    ("five", BOX, 0.0),
    ("", BOX, 0.0),
    ("5, 5", BOX, 1.0),  # "3, 4" without parentheses is a tuple
    ("[5, 5]", BOX, 1.0),  # a list becomes a tuple
    ("(True, True)", BOX, 1.0),  # True is an int (1)
    ("{3: 'a', 4: 'b'}", BOX, 1.0),  # tuple of a dict is its keys
  ],
)
@pytest.mark.parametrize("scorer", POINT)
def test_point_accuracy(scorer, answer, truth, expected):
  response = f"<think>It is at (5, 5).</think>\n<answer>{answer}</answer>"
  assert scorer(response, truth)["accuracy"] == expected


@pytest.mark.parametrize(
  "response,expected",
  [
    ("(5, 5)", 1.0),  # no answer: the whole response is parsed
    ("  [5, 5]\n", 1.0),
    ("The point is (5, 5).", 0.0),
    ("<think>x</think><answer>\n(5, 5)\n</answer>", 0.0),  # no DOTALL: the split answer is missed, the whole fails
    ("<think>x</think><ANSWER>(5, 5)</ANSWER>", 0.0),  # case-sensitive: missed, the whole fails
    ("<answer>(50, 50)</answer> <answer>(5, 5)</answer>", 0.0),  # the first answer counts
    ("<answer>(5, 5)</answer> <answer>(50, 50)</answer>", 1.0),
    ("<answer>\n(50, 50)</answer>\n<answer>(5, 5)</answer>", 1.0),  # the first answer on one line
  ],
)
@pytest.mark.parametrize("scorer", POINT)
def test_point_accuracy_answer_extraction(scorer, response, expected):
  assert scorer(response, BOX)["accuracy"] == expected


def test_multicrop_split_answer_formats_but_does_not_score():
  scores = point_in_bbox_multicrop(T + "<answer>\n(5, 5)\n</answer>", BOX)
  assert scores == {"overall": pytest.approx(0.4), "format": 1.0, "accuracy": 0.0}


# ---------------------------------------------------------------- string accuracy, multi-turn


@pytest.mark.parametrize(
  "response,truth,expected",
  [
    ("<think>x</think><answer>red car</answer>", "red car", 1.0),
    ("<think>x</think><answer> Red Car </answer>", "red car", 1.0),  # prediction lower-cased
    ("<think>x</think><answer>red car</answer>", " RED CAR\n", 1.0),  # truth stripped and lower-cased
    ("<think>x</think><ANSWER>red</Answer>", "red", 1.0),  # tags case-insensitive here
    ("<think>x</think><answer>\nred\n</answer>", "red", 1.0),  # DOTALL
    ("<answer>red\ncar</answer>", "red\ncar", 1.0),
    ("<answer>blue</answer><answer>red</answer>", "red", 0.0),  # the first answer counts
    ("<answer>A. red</answer>", "red", 0.0),  # no option prefix stripping in this variant
    ("<answer>red.</answer>", "red", 0.0),
    ("<answer></answer>", "", 1.0),
    ("  Red\n", "red", 1.0),  # no answer: the whole response, stripped and lower-cased
    ("<think>x</think> red", "red", 0.0),
  ],
)
def test_string_multiturn_accuracy(response, truth, expected):
  assert string_match_multiturn(response, truth)["accuracy"] == expected


# ---------------------------------------------------------------- grounded thinking: format

GOOD_THINK = "<think>The button is at (120, 45).</think>"


@pytest.mark.parametrize(
  "response,expected",
  [
    (GOOD_THINK + "\n<answer>(120, 45)</answer>", 1.0),
    (GOOD_THINK + "<answer>(120, 45)</answer>", 1.0),
    (GOOD_THINK + "<answer> (120, 45) </answer>", 1.0),  # body stripped
    (GOOD_THINK + "<answer>\n(120, 45)\n</answer>", 1.0),  # DOTALL here
    (GOOD_THINK + "<answer>( 120 , 45 )</answer>", 1.0),
    (GOOD_THINK + "<answer>((120, 45))</answer>", 1.0),  # parses to the tuple (120, 45)
    (GOOD_THINK + "<answer>(True, 45)</answer>", 1.0),
    (GOOD_THINK + "<answer>120, 45</answer>", 0.0),  # must start with ( and end with )
    (GOOD_THINK + "<answer>[120, 45]</answer>", 0.0),
    (GOOD_THINK + "<answer>([120, 45])</answer>", 0.0),  # a list, not a tuple
    (GOOD_THINK + "<answer>(120.0, 45)</answer>", 0.0),
    (GOOD_THINK + "<answer>(1e2, 45)</answer>", 0.0),
    (GOOD_THINK + "<answer>(120, 45, 1)</answer>", 0.0),
    (GOOD_THINK + "<answer>(120)</answer>", 0.0),
    (GOOD_THINK + "<answer>(120, 45) (1, 2)</answer>", 0.0),
    (GOOD_THINK + "<answer></answer>", 0.0),
    (" " + GOOD_THINK + "<answer>(120, 45)</answer>", 0.0),  # the response is not stripped
    (GOOD_THINK + "<answer>(120, 45)</answer>\n", 0.0),
    (GOOD_THINK + "<answer>(120, 45)</answer><|im_end|>", 0.0),
    ("Sure. " + GOOD_THINK + "<answer>(120, 45)</answer>", 0.0),
    (GOOD_THINK + " so <answer>(120, 45)</answer>", 0.0),  # only whitespace between think and answer
    ("<answer>(120, 45)</answer>", 0.0),
    (GOOD_THINK.upper() + "<answer>(120, 45)</answer>", 0.0),  # case-sensitive
  ],
)
def test_point_grounded_format(response, expected):
  assert point_in_bbox_grounded_thinking(response, "(100, 40, 130, 50)")["format"] == expected


@pytest.mark.parametrize(
  "think,expected",
  [
    ("<think>At (120, 45) there is a button.</think>", 1.0),
    ("<think>At (120,45).</think>", 1.0),
    ("<think>At (120 ,\n 45).</think>", 1.0),
    ("<think>From (1, 2) to (3, 4).</think>", 1.0),
    ("<think>At (\u0663, \u0664).</think>", 1.0),  # \d is any Unicode digit (Arabic-Indic 3 and 4 here)
    ("<think>At ( 120, 45).</think>", 0.0),  # no space allowed after "("
    ("<think>At (120, 45 ).</think>", 0.0),
    ("<think>At (120.5, 45).</think>", 0.0),
    ("<think>At (-120, 45).</think>", 0.0),
    ("<think>At [120, 45].</think>", 0.0),
    ("<think>At 120, 45.</think>", 0.0),
    ("<think>The top-left button.</think>", 0.0),
    ("<think>No point.</think><think>At (120, 45).</think>", 0.0),  # only the first think is checked
  ],
)
@pytest.mark.parametrize("scorer", [point_in_bbox_grounded_thinking, string_match_grounded_thinking])
def test_grounded_coordinate_check(scorer, think, expected):
  assert scorer(think + "\n<answer>(120, 45)</answer>", "(100, 40, 130, 50)")["format"] == expected


@pytest.mark.parametrize(
  "answer,expected",
  [
    ("A. left", 1.0),
    ("left", 1.0),
    ("\n left \n", 1.0),
    ("(12, 22)", 1.0),
    ("", 0.0),
    (" \n ", 0.0),
  ],
)
def test_string_grounded_format(answer, expected):
  assert string_match_grounded_thinking(GOOD_THINK + f"<answer>{answer}</answer>", "left")["format"] == expected


# ---------------------------------------------------------------- grounded thinking: string accuracy


@pytest.mark.parametrize(
  "answer,truth,expected",
  [
    ("left", "left", 1.0),
    ("Left", "left", 1.0),  # the prediction is lower-cased
    ("left", "Left", 0.0),  # the truth is not
    ("left", "  left\n", 1.0),  # the truth is stripped
    ("A. left", "left", 1.0),  # option prefixes
    ("B) left", "left", 1.0),
    ("c.left", "left", 1.0),
    ("D.   Left  ", "left", 1.0),
    ("A left", "left", 0.0),  # a letter alone is not a prefix
    ("(A) left", "left", 0.0),
    ("1. left", "left", 0.0),
    ("A. B. left", "left", 0.0),  # one prefix only
    ("A. B. left", "b. left", 1.0),
    ("U.S. flag", "s. flag", 1.0),  # the prefix rule eats "U."
    ("A.", "", 1.0),
    ("left.", "left", 0.0),
  ],
)
def test_string_grounded_accuracy(answer, truth, expected):
  response = f"<think>At (1, 2).</think>\n<answer>{answer}</answer>"
  assert string_match_grounded_thinking(response, truth)["accuracy"] == expected


@pytest.mark.parametrize(
  "response,expected",
  [
    ("A. left", 1.0),  # no answer: the whole response
    (" B) Left \n", 1.0),
    ("<think>x</think><answer>\nleft\n</answer>", 0.0),  # no DOTALL: missed, and the whole response does not match
    ("<think>x</think><ANSWER>left</ANSWER>", 0.0),  # case-sensitive
    ("<answer>right</answer><answer>left</answer>", 0.0),  # the first answer counts
    ("<answer>A. left\nmore</answer>", 0.0),  # no answer on one line; the whole response starts with "<"
  ],
)
def test_string_grounded_answer_extraction(response, expected):
  assert string_match_grounded_thinking(response, "left")["accuracy"] == expected


def test_option_prefix_keeps_only_the_first_line():
  # The prefix regex has no DOTALL, so "(.*)" stops at the first newline.
  assert string_match_grounded_thinking("A. left\nbecause", "left")["accuracy"] == 1.0


# ---------------------------------------------------------------- overall weights


def test_multiturn_overall_weights():
  assert point_in_bbox_multicrop(episode(answer="(5, 5)"), BOX) == {"overall": 1.0, "format": 1.0, "accuracy": 1.0}
  assert point_in_bbox_multicrop(episode(answer="(50, 5)"), BOX) == {
    "overall": pytest.approx(0.4),
    "format": 1.0,
    "accuracy": 0.0,
  }
  assert point_in_bbox_multicrop("(5, 5)", BOX) == {"overall": pytest.approx(0.6), "format": 0.0, "accuracy": 1.0}
  assert string_match_multiturn("red", "Red") == {"overall": pytest.approx(0.6), "format": 0.0, "accuracy": 1.0}
  assert string_match_multiturn(episode(answer="blue"), "red") == {
    "overall": pytest.approx(0.4),
    "format": 1.0,
    "accuracy": 0.0,
  }
  assert string_match_multiturn("blue", "red") == {"overall": 0.0, "format": 0.0, "accuracy": 0.0}


def test_multiturn_overall_exceeds_one_with_the_bonus():
  three = ("[0, 0]", "[100, 0]", "[0, 100]")
  scores = point_in_bbox_multicrop(episode(*three, answer="(5, 5)"), BOX)
  assert scores == {"overall": pytest.approx(1.16), "format": pytest.approx(1.4), "accuracy": 1.0}
  scores = string_match_multiturn(episode(*three, answer="Red"), "red")
  assert scores == {"overall": pytest.approx(1.16), "format": pytest.approx(1.4), "accuracy": 1.0}
  scores = string_match_multiturn(episode(*three, answer="blue"), "red")
  assert scores == {"overall": pytest.approx(0.56), "format": pytest.approx(1.4), "accuracy": 0.0}


def test_grounded_overall_weights():
  good = "<think>At (5, 5).</think>\n<answer>(5, 5)</answer>"
  assert point_in_bbox_grounded_thinking(good, BOX) == {"overall": 1.0, "format": 1.0, "accuracy": 1.0}
  assert point_in_bbox_grounded_thinking(good, "(50, 50, 60, 60)") == {"overall": 0.5, "format": 1.0, "accuracy": 0.0}
  assert point_in_bbox_grounded_thinking("(5, 5)", BOX) == {"overall": 0.5, "format": 0.0, "accuracy": 1.0}
  mc = "<think>At (5, 5).</think>\n<answer>A. left</answer>"
  assert string_match_grounded_thinking(mc, "left") == {"overall": 1.0, "format": 1.0, "accuracy": 1.0}
  assert string_match_grounded_thinking(mc, "right") == {"overall": 0.5, "format": 1.0, "accuracy": 0.0}
  no_point = "<think>Left of it.</think>\n<answer>A. left</answer>"
  assert string_match_grounded_thinking(no_point, "left") == {"overall": 0.5, "format": 0.0, "accuracy": 1.0}


# ---------------------------------------------------------------- caller mistakes and hostile text


@pytest.mark.parametrize("scorer", SCORERS)
@pytest.mark.parametrize(
  "response,truth", [(None, BOX), (b"(5, 5)", BOX), ("(5, 5)", None), ("(5, 5)", (0, 0, 10, 10))]
)
def test_non_str_arguments_raise(scorer, response, truth):
  with pytest.raises(TypeError, match="str arguments"):
    scorer(response, truth)


HOSTILE = [
  "(" * 100_000,
  "[" * 100_000,
  "{" * 100_000,
  "-" * 100_000 + "1",  # MemoryError from the parser
  "1" + "+1" * 200_000,  # RecursionError from the parser
  "9" * 5000,  # too many digits
  "(" + "9" * 5000 + ", 1)",
  "\x00",
  "b'\\x05\\x05'",
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize("scorer", SCORERS)
def test_hostile_text_scores_without_raising(scorer, text):
  for response, truth in [
    (text, BOX),
    (f"<think>(1, 2)</think><answer>{text}</answer>", BOX),
    ("<think>(1, 2)</think><answer>(5, 5)</answer>", text),
    (T + call(text) + OBS + T + A, BOX),
    (T + f"<tool_call>{{{text}}}</tool_call>" + OBS + T + A, BOX),
  ]:
    scores = scorer(response, truth)
    assert set(scores) == {"overall", "format", "accuracy"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in scores.values())


# ---------------------------------------------------------------- property: any text scores, never raises

FRAGMENTS = [
  "<think>",
  "</think>",
  "<THINK>",
  "</Think>",
  "<tool_call>",
  "</tool_call>",
  "<TOOL_CALL>",
  "<observation>",
  "</observation>",
  "<answer>",
  "</answer>",
  "<ANSWER>",
  "<|im_end|>",
  "<image>",
  call("[10, 20]"),
  call("[10.5, 20]"),
  call("[true, 20]"),
  call("[" + "9" * 400 + ", 1]"),
  '{"arguments": {"coordinate": [1, 2]}',
  '{"arguments": [1, 2]}',
  '{"arguments": {"coordinate": NaN}}',
  '{"name": "x"}',
  OBS,
  "(5, 5)",
  "(120, 45)",
  "5, 5",
  "[5, 5]",
  "(5.0, 5)",
  "(1e308, 1e308)",
  "(1e999, 0)",
  "(True, False)",
  "(" + "9" * 5000 + ", 1)",
  "(" * 300,
  ")" * 5,
  "[" * 300,
  "{" * 300,
  "-" * 500 + "1",
  "A. ",
  "B) ",
  "left",
  "Left",
  " ",
  "\n",
  "\x00",
  "٣",
  "😀",
  "b'ab'",
  "{3: 4, 5: 6}",
]
texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=24).map("".join)
truths = st.one_of(
  st.sampled_from(["(0, 0, 100, 100)", "[0, 0, 10, 10]", "left", "Left", "", "((((", "9" * 5000]), texts
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(response=texts, truth=truths)
def test_any_text_scores_finite_without_raising(response, truth):
  for scorer in SCORERS:
    scores = scorer(response, truth)
    assert set(scores) == {"overall", "format", "accuracy"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in scores.values())
    assert scores["accuracy"] in (0.0, 1.0)
    if scorer in MULTITURN:
      assert scores["format"] == 0.0 or scores["format"] >= 1.0
      assert scores["overall"] == pytest.approx(0.6 * scores["accuracy"] + 0.4 * scores["format"])
    else:
      assert scores["format"] in (0.0, 1.0)
      assert scores["overall"] == pytest.approx(0.5 * scores["accuracy"] + 0.5 * scores["format"])


def test_public_names():
  assert vigorl.__all__ == [
    "point_in_bbox_multicrop",
    "string_match_multiturn",
    "point_in_bbox_grounded_thinking",
    "string_match_grounded_thinking",
  ]


def test_model_text_that_python_warns_about_scores_silently():
  """ "1or 2" compiles with a SyntaxWarning (invalid decimal literal); a run's log must not fill up with them."""
  import warnings

  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert vigorl.point_in_bbox_multicrop("<answer>(1or 2)</answer>", "(0, 0, 5, 5)")["accuracy"] == 0.0
    thinking = vigorl.point_in_bbox_grounded_thinking("<think>(1, 2)</think><answer>(0x1for)</answer>", "(0, 0, 5, 5)")
    assert thinking["format"] == 0.0
  assert [w for w in caught if issubclass(w.category, SyntaxWarning)] == []
