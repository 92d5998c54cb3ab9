"""Property test: any model text scores without raising, and every metric stays in its range."""

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from vrrl_jax.tasks.frozenlake import release_data
from vrrl_jax.tasks.frozenlake.reward import METRIC_KEYS, RewardConfig, score_turns

HAND_MAPS = [
  {"layout": ["SFF", "FFF", "FFG"], "start_pos": 0, "target_pos": 8, "level": 3},
  {"layout": ["SFF", "FHF", "FFG"], "start_pos": 0, "target_pos": 8, "level": 3},
  {"layout": ["SHHH", "FGHF", "FFFH", "FFHH"], "start_pos": 0, "target_pos": 5, "level": 4},
]
UNREACHABLE = {"layout": ["SFH", "FHH", "HHG"], "start_pos": 0, "target_pos": 8, "level": 3}

CONFIGS = [
  RewardConfig(),
  RewardConfig.released(),
  RewardConfig(
    lambda_deg=2.0,
    reflect_lower_clip=-0.1,
    em_reflect_bonus_weight=0.2,
    em_reflect_step_discount=0.7,
    step_cost=0.05,
    step_cost_churn_only=True,
    prefix_buffer_decision_bonus=0.3,
    min_turns=3,
  ),
  RewardConfig(outcome_reward="pr", outcome_weight=0.5, pr_overshoot_zero=True, prefix_buffer_decision_bonus=0.2),
  RewardConfig(correct_value=2.0, reflect_weight=0.5, lambda_deg=0.3),
]
BUFFERS = [
  {},
  {"is_prefix_buffer_rollout": True, "prefix_buffer_type": "wrong", "prefix_buffer_num_turns": 1},
  {"is_prefix_buffer_rollout": True, "prefix_buffer_type": "right", "prefix_buffer_num_turns": 2},
]

MOVE_WORDS = ["up", "down", "left", "right", "UP", "Down", "lEfT", "RIGHT", "upp", "rightt", "sideways"]
TAGS = [
  "<ANSWER>",
  "</ANSWER>",
  "<answer>",
  "</answer>",
  "<FINAL>",
  "</FINAL>",
  "<final>",
  "</Final>",
  "<THINK>",
  "</THINK>",
  "<think>",
  "</think>",
  "<ANSWER x='1'>",
  "<FINAL >",
  "<FINALS>",
  "<",
  ">",
  "</",
  "<<ANSWER>>",
  "<|im_end|>",
  "<|im_start|>assistant\n",
]
SEPARATORS = [" ", ",", ", ", "\n", "\t", " ,, ", "\u00a0", "\u3000", ""]

tag_soup = st.lists(st.one_of(st.sampled_from(MOVE_WORDS + TAGS + SEPARATORS), st.text(max_size=4)), max_size=40).map(
  "".join
)


def move_lists(min_size, separators):
  return st.lists(
    st.tuples(st.sampled_from(separators), st.sampled_from(MOVE_WORDS[:8])), min_size=min_size, max_size=12
  ).map(lambda parts: "".join(sep + word for sep, word in parts))


body = move_lists(0, SEPARATORS)  # "" between two words makes an invalid token
tagged = st.tuples(st.booleans(), st.sampled_from(["ANSWER", "FINAL", "answer", "final"]), body).map(
  lambda t: ("<THINK>let me look</THINK>" if t[0] else "") + f"<{t[1]}>{t[2]}</{t[1]}>"
)
nested = st.tuples(
  st.sampled_from(["ANSWER", "FINAL", "THINK"]), st.sampled_from(["ANSWER", "FINAL", "THINK"]), body, st.booleans()
).map(lambda t: f"<{t[0]}><{t[1]}>{t[2]}</{t[0]}>" + (f"</{t[1]}>" if t[3] else ""))
huge = st.tuples(st.sampled_from(MOVE_WORDS[:8]), st.integers(500, 5000), st.sampled_from(["ANSWER", "FINAL"])).map(
  lambda t: f"<{t[2]}>" + f"{t[0]} " * t[1] + f"</{t[2]}>"
)
turn_text = st.one_of(st.text(), tag_soup, tagged, tagged, nested, huge, st.sampled_from(["", " ", "\n\t "]))


@st.composite
def protocol_transcripts(draw, optimal):
  """Turns that follow the protocol more often than not, so EM and the bonuses get exercised."""
  route = st.one_of(st.just(optimal), move_lists(1, SEPARATORS[:-1]))
  routes = draw(st.lists(route, min_size=1, max_size=5, unique=True))
  turns = [f"<ANSWER>{routes[0]}</ANSWER>"]
  turns += [f"<THINK>revise</THINK><ANSWER>{r}</ANSWER>" for r in routes[1:]]
  if draw(st.sampled_from([True, True, True, False])):
    turns.append(f"<FINAL>{routes[-1]}</FINAL>")
  return turns


@pytest.fixture(scope="module")
def maps_and_routes():
  entries = release_data.read_maps(release_data.EVAL_FILE)
  picked = HAND_MAPS + entries[::40]  # 25 eval maps across levels 3-6
  optimal = ["right right down down", "right right down down", "down right"]
  optimal += [" ".join(e["metadata"]["actions"]) for e in entries[::40]]
  return list(zip(picked, optimal))


def bounds(config, buffer, n_turns):
  """The reward's range from the spec's formula, for a transcript of ``n_turns`` turns."""
  bonus = config.prefix_buffer_decision_bonus if buffer else 0.0
  wrong_high = 0.1 + config.reflect_weight if config.outcome_reward == "em" else config.correct_value
  high = max(config.correct_value + config.em_reflect_bonus_weight, wrong_high) + bonus
  low = (
    min(
      0.0,
      0.1 + config.reflect_weight * config.reflect_lower_clip,
      config.correct_value - config.step_cost * max(n_turns - 2, 0),
    )
    - bonus
  )
  return low, high


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), config=st.sampled_from(CONFIGS), buffer=st.sampled_from(BUFFERS))
def test_any_text_scores_in_range(maps_and_routes, data, config, buffer):
  spec, optimal = data.draw(st.sampled_from(maps_and_routes))
  free_text = data.draw(st.booleans())
  turns = data.draw(st.lists(turn_text, max_size=10) if free_text else protocol_transcripts(optimal))
  out = score_turns(turns, spec, **vars(config), **buffer)
  event(f"free={free_text} format={out['format']} em={out['em']} decision_bonus={out['decision_bonus'] != 0}")

  assert list(out) == list(METRIC_KEYS)
  assert all(isinstance(v, float) for v in out.values())
  assert out["format"] in (0.0, 0.1)
  for key in ("em", "em_final", "em_turn1", "break"):
    assert out[key] in (0.0, 1.0), key
  assert out["em"] == out["em_final"]
  assert 0.0 <= out["pr_final"] <= 1.0 and 0.0 <= out["pr_turn1"] <= 1.0
  if out["em"]:
    assert out["pr_final"] == 1.0
  assert config.reflect_lower_clip <= out["reflection"] <= 1.0
  assert out["n_turns"] == sum(1 for t in turns if t.strip())
  assert out["decision_bonus"] in (0.0, config.prefix_buffer_decision_bonus, -config.prefix_buffer_decision_bonus)
  if out["format"] == 0.0:
    assert out["overall"] == out["outcome"] == out["decision_bonus"] == out["step_cost"] == 0.0
  low, high = bounds(config, buffer, len(turns))
  assert low <= out["overall"] <= high
  if config.reflect_lower_clip == 0.0 and not (buffer and config.prefix_buffer_decision_bonus):
    # The brief's form of the range: [0, correct_value + reflection bonus].
    assert 0.0 <= out["overall"] <= config.correct_value + config.em_reflect_bonus_weight


@settings(max_examples=30, deadline=None)
@given(turns=st.lists(turn_text, max_size=6), config=st.sampled_from(CONFIGS))
def test_unreachable_goal_always_scores_zero(turns, config):
  assert score_turns(turns, UNREACHABLE, **vars(config)) == {key: 0.0 for key in METRIC_KEYS}
