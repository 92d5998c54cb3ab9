"""The rollout driver plays FrozenLake episodes to completion with the right token sequences and masks.

The policy is a tiny Qwen2.5-VL whose weights make it a bigram model (attention and MLP outputs zeroed, so the
logits depend on the current token only): after "assistant\\n" it opens a route
"<ANSWER>up</ANSWER>", a commit "<FINAL>down </FINAL>" or the unparseable "hello" (probabilities 0.6, 0.2, 0.2),
and ends each with <|im_end|>.
So episodes end on any turn with "final" or "format_error", or run into max_turns, and the sampled log-probs are
known in closed form (log 0.6 / 0.2 / 0.2 at the branch, 0 elsewhere). Checks are against independent references: the chat
processor's tokenisation of each whole conversation, masks rebuilt from the chat markup, the reward function.
"""

import jax
import numpy as np
import pytest

import qwen_tiny as qt
from vrrl_jax.data import processor as processor_lib
from vrrl_jax.data import tokenizer as tokenizer_lib
from vrrl_jax.tasks import frozenlake
from vrrl_jax.tasks.frozenlake import maps, parse, protocol, render
from vrrl_jax.models import Qwen25VLConfig, abstract_params, prepare_inputs
from vrrl_jax.tasks.frozenlake.reward import METRIC_KEYS, score_turns
from vrrl_jax.rl.prefix_buffer import PrefixEntry
from vrrl_jax.sampling import rollout as rollout_lib
from vrrl_jax.sampling.buckets import Buckets
from vrrl_jax.sampling.sampler import LENGTH, STOP, Sampler

ROUTE, COMMIT, BROKEN = "<ANSWER>up</ANSWER>", "<FINAL>down </FINAL>", "hello"
BRANCH = {ROUTE: 0.6, COMMIT: 0.2, BROKEN: 0.2}  # what follows "assistant\n"
SPECS = [
  dict(layout=["SFF", "FHF", "FFG"], start_pos=0, target_pos=8),
  dict(layout=["FFG", "FHF", "SFF"], start_pos=6, target_pos=2),
]


@pytest.fixture(scope="module")
def setup():
  corpus = [protocol.TASK_PROMPT, protocol.FEEDBACK_TEXT, "You are a helpful assistant."] * 20
  corpus += [ROUTE, COMMIT, BROKEN, "<THINK>"] * 50
  tokenizer = tokenizer_lib.build_tokenizer(corpus, vocab_size=600)
  ids = tokenizer_lib.special_token_ids(tokenizer)
  image_config = processor_lib.ImageProcessorConfig.qwen2_5_vl(min_pixels=56 * 56, max_pixels=112 * 112)
  chat = processor_lib.ChatProcessor(tokenizer, image_config)
  raw = qt.tiny_config_dict()
  raw["text_config"]["vocab_size"] = ids.vocab_size
  raw.update(
    image_token_id=ids.image_token_id,
    video_token_id=ids.video_token_id,
    vision_start_token_id=ids.vision_start_token_id,
    vision_end_token_id=ids.vision_end_token_id,
  )
  config = Qwen25VLConfig.from_hf(raw)
  params = bigram_params(config, chat)
  sampler = Sampler(config, pad_token_id=ids.pad_token_id, buckets=Buckets(min_batch=8, min_cache=1024))
  return chat, sampler, params


def bigram_params(config, chat):
  """Residual stream = embedding of the current token; lm_head maps it to the successor in the chains (logit 40,
  plus log BRANCH[text] at the branch, so the branch draws the three openings with probabilities BRANCH)."""
  rng = np.random.default_rng(0)
  shapes, _ = abstract_params(config)
  params = jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(np.float32), shapes)
  text = params["language_model"]
  for i in range(config.text.num_hidden_layers):
    text[f"layers_{i}"]["self_attn"]["o_proj"]["kernel"][:] = 0
    text[f"layers_{i}"]["mlp"]["down_proj"]["kernel"][:] = 0
  text["norm"]["scale"][:] = 1
  embed = rng.standard_normal(text["embed_tokens"].shape).astype(np.float32)
  text["embed_tokens"] = embed
  normed = embed / np.sqrt(np.mean(embed**2, axis=-1, keepdims=True) + config.text.rms_norm_eps)
  successors = {}  # token -> {next token: logit}
  newline = int(chat.encode_text("\n")[-1])
  for opening, probability in BRANCH.items():
    chain = chat.encode_text(opening).tolist() + [chat.token_ids.im_end_id]
    successors.setdefault(newline, {})[chain[0]] = 40.0 + np.log(probability)
    for token, nxt in zip(chain[:-1], chain[1:]):
      successors.setdefault(token, {})[nxt] = 40.0
  successors[int(chat.encode_text("<THINK>")[-1])][chat.token_ids.im_end_id] = 40.0
  assert all(len(s) == 1 for t, s in successors.items() if t != newline), successors
  lm_head = np.zeros_like(text["lm_head"])
  for token, nexts in successors.items():
    for nxt, logit in nexts.items():
      lm_head[:, nxt] += logit * normed[token] / config.text.hidden_size
  text["lm_head"] = lm_head
  return params


def conversation(trajectory):
  messages = [
    {
      "role": "user",
      "content": [{"type": "image", "image": trajectory.map_image}, {"type": "text", "text": trajectory.prompt_text}],
    }
  ]
  for i, text in enumerate(trajectory.turns):
    messages.append({"role": "assistant", "content": text})
    if i < len(trajectory.feedback_images):
      messages.append(
        {
          "role": "user",
          "content": [
            {"type": "image", "image": trajectory.feedback_images[i]},
            {"type": "text", "text": trajectory.feedback_texts[i]},
          ],
        }
      )
  return messages


def expected_assistant_mask(chat, trajectory, forced_opening):
  """Rebuilt from the markup: after each "<|im_start|>assistant\\n", up to and including the <|im_end|> the model
  sampled (a turn cut by its budget ends before the template's <|im_end|>), minus a forced opening."""
  marker = chat.encode_text("<|im_start|>assistant\n").tolist()
  tokens = trajectory.tokens.tolist()
  mask = np.zeros(len(tokens), np.int32)
  turn_index = np.full(len(tokens), -1, np.int32)
  starts = [i + len(marker) for i in range(len(tokens)) if tokens[i : i + len(marker)] == marker]
  assert len(starts) == trajectory.num_turns
  reasons = ("stop",) * trajectory.num_prefix_turns + trajectory.turn_finish_reasons
  for turn, (start, reason) in enumerate(zip(starts, reasons)):
    end = tokens.index(chat.token_ids.im_end_id, start) + (reason == "stop")
    if turn == trajectory.num_prefix_turns and forced_opening:
      start += len(chat.encode_text(forced_opening))
    mask[start:end] = 1
    turn_index[start:end] = turn
  return mask, turn_index


def check_trajectory(chat, trajectory, forced_opening, max_turns):
  # The token sequence is the tokenisation of the whole conversation.
  whole = chat.encode(conversation(trajectory), add_generation_prompt=False)
  np.testing.assert_array_equal(trajectory.tokens, whole["input_ids"][0])
  np.testing.assert_array_equal(trajectory.pixel_values, whole["pixel_values"])
  np.testing.assert_array_equal(trajectory.image_grid_thw, whole["image_grid_thw"])
  # Masks.
  mask, turn_index = expected_assistant_mask(chat, trajectory, forced_opening)
  np.testing.assert_array_equal(trajectory.assistant_mask, mask)
  np.testing.assert_array_equal(trajectory.env_mask, 1 - mask)
  np.testing.assert_array_equal(trajectory.turn_index, turn_index)
  # Log-probs: on sampled tokens only; log BRANCH at the branch after "assistant\n", 0 in the chains.
  sampled = turn_index >= trajectory.num_prefix_turns
  assert not trajectory.log_probs[~sampled].any()
  newline = int(chat.encode_text("\n")[-1])
  branch = {int(chat.encode_text(opening)[0]): np.log(p) for opening, p in BRANCH.items()}
  expected = [
    branch.get(int(token), np.nan) if previous == newline else 0.0
    for previous, token in zip(trajectory.tokens[:-1], trajectory.tokens[1:])
  ]
  np.testing.assert_allclose(trajectory.log_probs[sampled], np.array([0.0] + expected)[sampled], atol=1e-4)
  # Finish reason agrees with the last turn.
  last = parse.parse_turn(trajectory.turns[-1])
  if trajectory.finish_reason == protocol.FINAL:
    assert last.is_final and last.ok
  elif trajectory.finish_reason == protocol.FORMAT_ERROR:
    assert not last.ok
  elif trajectory.finish_reason == protocol.MAX_TURNS:
    assert last.is_route and last.ok and trajectory.num_turns == max_turns
  else:
    assert trajectory.finish_reason == rollout_lib.TOKEN_BUDGET and last.is_route and last.ok
  assert all(parse.parse_turn(t).is_route and parse.parse_turn(t).ok for t in trajectory.turns[:-1])
  metrics = score_turns(trajectory.turns, trajectory.spec)
  assert set(metrics) == set(METRIC_KEYS) and all(np.isfinite(v) for v in metrics.values())


def test_rollout_plays_episodes_with_prefixes_and_forced_openings(setup):
  chat, sampler, params = setup
  spec = maps.parse_spec(SPECS[1])
  prefix = PrefixEntry(
    spec=spec,
    prefix_type="wrong",
    collection_step=0,
    prompt_text=protocol.TASK_PROMPT,
    assistant_texts=(ROUTE,),
    feedback_texts=(protocol.FEEDBACK_TEXT,),
    final_text="<FINAL>up</FINAL>",
    map_image=np.asarray(render.render_map(spec)),
    feedback_images=(np.asarray(render.render_feedback(spec, ["up"])),),
  )
  specs = [SPECS[0], SPECS[1], SPECS[0]]
  prefixes = [None, None, prefix]
  openings = [None, None, "<THINK>"]
  config = rollout_lib.RolloutConfig(max_turns=3, max_new_tokens=16)
  n = 4
  trajectories = rollout_lib.rollout(
    frozenlake,
    sampler,
    chat,
    params,
    specs,
    n,
    prefixes=prefixes,
    forced_openings=openings,
    config=config,
    rng=jax.random.key(3),
  )
  assert len(trajectories) == len(specs) * n
  reasons = [t.finish_reason for t in trajectories]
  print(
    f"[rollout] finish reasons {reasons}, turns {[t.num_turns for t in trajectories]}, "
    f"programs {sampler.compile_log.counts}"
  )
  assert {protocol.FINAL, protocol.FORMAT_ERROR, protocol.MAX_TURNS} <= set(reasons)
  for s, trajectory in enumerate(trajectories):
    question = s // n
    assert trajectory.prompt_index == question
    check_trajectory(chat, trajectory, openings[question], config.max_turns)
    assert not trajectory.truncated and set(trajectory.turn_finish_reasons) == {STOP}
    if prefixes[question] is None:
      assert trajectory.num_prefix_turns == 0 and trajectory.spec == maps.parse_spec(specs[question])
    else:
      # Replayed: the prefix's own map, its route turn counted, then a forced "<THINK>" the model closes at once.
      assert trajectory.num_prefix_turns == 1 and trajectory.spec == spec
      assert trajectory.turns == (ROUTE, "<THINK>") and trajectory.finish_reason == protocol.FORMAT_ERROR
      assert trajectory.buffer_episode("prefix_buffer").assistant_texts == trajectory.turns

  # One trainer forward can take the padded batch: image tokens and images agree.
  batch = rollout_lib.pad_trajectories(trajectories, chat.token_ids.pad_token_id)
  prepare_inputs(
    sampler.config, batch["tokens"], batch["attention_mask"], batch["pixel_values"], batch["image_grid_thw"]
  )
  np.testing.assert_array_equal(batch["assistant_mask"] + batch["env_mask"], batch["attention_mask"])


def test_token_budgets(setup):
  """A 5-token turn budget cuts every chain before its <|im_end|>; the total budget ends route episodes."""
  chat, sampler, params = setup
  prompt_length = chat.encode(
    [
      {
        "role": "user",
        "content": [
          {"type": "image", "image": render.render_map(maps.parse_spec(SPECS[0]))},
          {"type": "text", "text": protocol.TASK_PROMPT},
        ],
      }
    ]
  )["input_ids"].shape[1]
  config = rollout_lib.RolloutConfig(max_turns=3, max_new_tokens=5, max_sequence_len=prompt_length + 40)
  trajectories = rollout_lib.rollout(
    frozenlake, sampler, chat, params, SPECS[:1], 8, config=config, rng=jax.random.key(0)
  )
  reasons = {t.finish_reason for t in trajectories}
  assert reasons <= {protocol.FINAL, protocol.FORMAT_ERROR, rollout_lib.TOKEN_BUDGET}
  assert rollout_lib.TOKEN_BUDGET in reasons
  for trajectory in trajectories:
    check_trajectory(chat, trajectory, None, config.max_turns)
    assert trajectory.num_turns == 1 and len(trajectory.tokens) <= config.max_sequence_len
    assert trajectory.truncated == (trajectory.turns[0] != BROKEN)
    assert trajectory.turn_finish_reasons == ((STOP,) if trajectory.turns[0] == BROKEN else (LENGTH,))
