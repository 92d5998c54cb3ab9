"""Episode protocol: upstream texts, feedback turns, and each way an episode ends."""

import numpy as np
import pytest

from vrrl_jax.tasks.frozenlake import maps, protocol, render

# Reference texts, verbatim from github fc2869/VRRL @ 038e4d97 (prompts.py SYSTEM_PROMPT_TAG_VPRL_DIRECT,
# which EasyR1/training/format_prompt/frozenlake_reflection.jinja renders to with empty content;
# FEEDBACK_USER_PROMPT_REFLECTION in verl/workers/rollout/frozenlake_helpers.py and
# api_inference_frozenlake.py; FIRST_USER_TEXT_TAG_VPRL_DIRECT in api_inference_frozenlake.py).
UPSTREAM_JINJA = """{{ content | trim }}

Task: Frozen Lake Shortest Path Planning
You are given an image of a grid-based environment. In this environment:
- An elf marks the starting position.
- A gift represents the goal.
- Some cells contain ice holes that are impassable for the elf.
- The elf can move in one of four directions only: "up", "down", "left",
or "right". Each move transitions the elf by one cell in the
corresponding absolute direction. Diagonal movement is not permitted.
Your task is to analyze the image and generate the shortest valid
sequence of actions that moves the elf from the starting position to
the goal without stepping into any ice holes.
Provide your final answer enclosed between <ANSWER> and </ANSWER>, for
example: <ANSWER>right up up</ANSWER>."""
UPSTREAM_FEEDBACK = """The image shows your proposed action sequence executed on the grid.
Verify the path against the task requirements. If the path reaches the
gift without stepping on any ice holes, confirm with
<FINAL>actions</FINAL>. Otherwise, provide your reasoning in
<THINK>...</THINK> and a revised sequence in <ANSWER>actions</ANSWER>."""
UPSTREAM_FIRST_USER = "Generate the shortest action sequence."

SPEC = {"layout": ["SFF", "FHF", "FFG"], "start_pos": 0, "target_pos": 8}
BEST = "right right down down"


def _same_image(a, b):
  return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def test_texts_match_upstream():
  assert protocol.TASK_PROMPT == UPSTREAM_JINJA.replace("{{ content | trim }}", "").strip()
  assert protocol.FEEDBACK_TEXT == UPSTREAM_FEEDBACK
  assert protocol.FIRST_USER_TEXT == UPSTREAM_FIRST_USER


def test_first_prompt_is_task_text_and_map():
  episode = protocol.Episode(SPEC)
  text, image = episode.first_prompt()
  assert text == protocol.TASK_PROMPT
  assert _same_image(image, render.render_map(SPEC))
  assert episode.images == [image] and episode.turns == [] and not episode.done


def test_revise_then_final():
  episode = protocol.Episode(SPEC, max_turns=8)
  wrong = "<ANSWER>down right right down</ANSWER>"  # through the hole at (1, 1)
  step = episode.step(wrong)
  assert not step.done and step.reason is None
  assert step.parsed.is_route and step.parsed.actions == ("down", "right", "right", "down")
  assert step.feedback_text == protocol.FEEDBACK_TEXT
  assert _same_image(step.feedback_image, render.render_feedback(SPEC, ["down", "right", "right", "down"]))

  revision = f"<THINK>the route fell into the hole</THINK><ANSWER>{BEST}</ANSWER>"
  step = episode.step(revision)
  assert not step.done and _same_image(step.feedback_image, render.render_feedback(SPEC, BEST.split()))

  final = f"<FINAL>{BEST}</FINAL>"
  step = episode.step(final)
  assert step.done and step.reason == "final" and step.feedback_image is None and step.feedback_text is None
  assert episode.done and episode.reason == "final"
  assert episode.turns == [wrong, revision, final]
  assert len(episode.images) == 3  # map + two feedback images
  assert episode.routes == [("down", "right", "right", "down"), tuple(BEST.split())]
  assert maps.is_exact_match(maps.parse_spec(SPEC), episode.parsed[-1].actions)


def test_final_on_first_turn_ends_with_final():
  episode = protocol.Episode(SPEC)
  step = episode.step(f"<FINAL>{BEST}</FINAL>")
  assert step.done and step.reason == "final" and len(episode.images) == 1


def test_final_wins_over_answer_in_one_turn():
  step = protocol.Episode(SPEC).step(f"<ANSWER>up</ANSWER><FINAL>{BEST}</FINAL>")
  assert step.done and step.reason == "final"


@pytest.mark.parametrize(
  "text",
  [
    "right right down down",  # no tag
    "<ANSWER>right north</ANSWER>",  # not a move
    "<ANSWER>right right down down",  # unclosed tag
    "<FINAL>right, jump</FINAL>",
    "",
    None,
  ],
)
def test_unparseable_turn_is_a_format_error(text):
  episode = protocol.Episode(SPEC)
  episode.step("<ANSWER>right</ANSWER>")
  step = episode.step(text)
  assert step.done and step.reason == "format_error" and step.feedback_image is None
  assert episode.reason == "format_error" and len(episode.turns) == 2 and len(episode.images) == 2


def test_empty_answer_gets_feedback_not_format_error():
  """An empty list parses (the reward's format gate penalises it); the image is the map with the star
  on the start."""
  step = protocol.Episode(SPEC).step("<ANSWER></ANSWER>")
  assert not step.done and step.parsed.actions == ()
  assert _same_image(step.feedback_image, render.render_feedback(SPEC, []))


def test_max_turns_ends_without_feedback():
  episode = protocol.Episode(SPEC, max_turns=3)
  assert not episode.step("<ANSWER>down</ANSWER>").done
  assert not episode.step("<THINK>t</THINK><ANSWER>right</ANSWER>").done
  step = episode.step("<THINK>t</THINK><ANSWER>down down</ANSWER>")
  assert step.done and step.reason == "max_turns" and step.feedback_image is None
  assert len(episode.turns) == 3 and len(episode.images) == 3
  with pytest.raises(RuntimeError, match="already ended \\(max_turns\\) after 3 turns"):
    episode.step(f"<FINAL>{BEST}</FINAL>")


def test_final_or_format_error_on_the_last_turn_keep_their_reason():
  episode = protocol.Episode(SPEC, max_turns=2)
  episode.step("<ANSWER>down</ANSWER>")
  assert episode.step(f"<FINAL>{BEST}</FINAL>").reason == "final"
  episode = protocol.Episode(SPEC, max_turns=1)
  assert episode.step("oops").reason == "format_error"


def test_style_and_validation():
  episode = protocol.Episode(SPEC, style="ood")
  assert episode.first_prompt()[1].size == (3 * render.STYLES["ood"].cell_px,) * 2
  assert episode.step("<ANSWER>up</ANSWER>").feedback_image.size == (192, 256)  # off-grid: one more row
  for bad in (0, -1, 2.5, True):
    with pytest.raises(ValueError, match="max_turns"):
      protocol.Episode(SPEC, max_turns=bad)
  with pytest.raises(maps.MapSpecError):
    protocol.Episode({"layout": ["SF", "FF"], "start_pos": 0, "target_pos": 3})
  with pytest.raises(ValueError, match="unknown render style"):
    protocol.Episode(SPEC, style="nope")


def test_episode_turns_feed_the_reward():
  """The transcript follows every format rule of VRRL_SPEC section 2 and commits the optimal route."""
  from vrrl_jax.tasks.frozenlake.reward import score_turns

  episode = protocol.Episode(SPEC)
  for text in (
    "<ANSWER>down right right down</ANSWER>",
    f"<THINK>the route fell into the hole</THINK><ANSWER>{BEST}</ANSWER>",
    f"<FINAL>{BEST}</FINAL>",
  ):
    episode.step(text)
  metrics = score_turns(episode.turns, episode.spec)
  assert metrics["format"] == pytest.approx(0.1) and metrics["em"] == 1.0 and metrics["n_turns"] == 3
