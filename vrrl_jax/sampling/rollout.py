"""Multi-turn rollouts: the sampler generates, the task's environment answers with feedback images.

`rollout` plays a batch of episodes turn by turn (VRRL_SPEC sections 1, 3, 4). Each prompt (a question, or a
replayed prefix from the buffer, optionally followed by a forced assistant opening such as "<THINK>") is prefilled
once and fanned out to `n_per_prompt` samples. After every turn the host hands each sample's text to its episode
(`task.new_episode`), which answers with a feedback turn (an image and/or text; the text may place the image with
`conversation.IMAGE_PLACEHOLDER`), optionally with a forced opening of the next assistant turn (its Step's
``next_opening``, e.g. ViGoRL's forced final answer), or ends; the feedback turn is
tokenised with `ChatProcessor.encode_segment`; only the samples whose episode goes on are continued, on the cache
they already have (no re-prefill). The driver knows no task: the task is handed in.

The returned token sequence of a sample is the tokenisation of its whole conversation (what
`ChatProcessor.encode(messages, add_generation_prompt=False)` gives, as long as the model's tokens are the canonical
tokenisation of its text): prompt, then for each turn the tokens the model sampled (its <|im_end|> included), the
feedback turn, and after the last turn the chat template's closing tokens. Masks partition the real tokens:

  assistant_mask 1: assistant turn content the policy is trained on: every sampled token (a sampled <|im_end|>
      included) and the text + <|im_end|> of replayed prefix turns (`rl.modes.loss_mask` decides whether those
      carry loss). Upstream's mask leaves <|im_end|> out; ours keeps it because the policy decides when to stop.
  env_mask 1: everything else: system/user turns, images, chat markup, forced openings, closing tokens.
  turn_index: the assistant turn (0-based, prefix turns counted) of tokens with assistant_mask 1, else -1.
  log_probs: the sampling log-prob of each token sampled in this rollout, 0 elsewhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from PIL import Image

from vrrl_jax.data import conversation
from vrrl_jax.data.processor import ChatProcessor
from vrrl_jax.rl import prefix_buffer as prefix_buffer_lib
from vrrl_jax.sampling.sampler import LENGTH, STOP, Sampler, SamplingConfig, Segment

# A finish reason is the environment's (its ``Step.reason``), or this one: the total token budget ran out first.
TOKEN_BUDGET = "length"

_ENV, _ASSISTANT, _SAMPLED = 0, 1, 2
_CLOSING_TOKENS = 2  # room kept for the "<|im_end|>\n" that closes an unfinished last turn


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  """Turn budget, per-turn and total token budgets, and how tokens are drawn (released: temperature 1, top-p 1).

  max_sequence_len bounds a sample's whole token sequence; a turn's budget shrinks to what is left, and an episode
  whose next feedback turn would leave no room ends with "length".
  """

  max_turns: int = 8
  max_new_tokens: int = 512
  max_sequence_len: int = 8192
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  style: str = "default"  # the task's render style of feedback images (the examples' own)
  episode_options: tuple = ()  # (name, value) pairs: task.episode_options(config), passed to task.new_episode
  # Text that also ends a turn (task.TURN_STOP_STRINGS; ViGoRL: "</tool_call>", "</answer>"): the turn keeps the
  # tokens up to the one that completes the first match; those generated after it are dropped from the sample and
  # from the cache, and the environment closes the turn.
  stop_strings: tuple[str, ...] = ()

  def __post_init__(self):
    for name in ("max_turns", "max_new_tokens", "max_sequence_len"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"RolloutConfig.{name} must be a positive int, got {value!r}")
    if not isinstance(self.style, str):
      raise ValueError(f"RolloutConfig.style must be a render style name, got {self.style!r}")
    if not isinstance(self.stop_strings, tuple) or not all(isinstance(t, str) and t for t in self.stop_strings):
      raise ValueError(f"RolloutConfig.stop_strings must be a tuple of non-empty strings, got {self.stop_strings!r}")

  def sampling(self, chat: ChatProcessor) -> SamplingConfig:
    """Turns end at <|im_end|>; image/video pad tokens are never drawn (a later forward would scatter image
    features into them)."""
    ids = chat.token_ids
    return SamplingConfig(
      temperature=self.temperature,
      top_p=self.top_p,
      top_k=self.top_k,
      max_new_tokens=self.max_new_tokens,
      stop_token_ids=(ids.im_end_id,),
      suppressed_token_ids=(ids.image_token_id, ids.video_token_id),
    )


@dataclasses.dataclass(frozen=True)
class Trajectory:
  """One sample's whole conversation (see the module docstring for the per-token arrays, all [S])."""

  tokens: np.ndarray  # int32
  assistant_mask: np.ndarray  # int32
  env_mask: np.ndarray  # int32
  turn_index: np.ndarray  # int32
  log_probs: np.ndarray  # float32
  pixel_values: np.ndarray  # [patches, patch_dim] float32: every image of the sequence, in order
  image_grid_thw: np.ndarray  # [images, 3] int64
  turns: tuple[str, ...]  # assistant turn texts (prefix turns and forced openings included); score_turns input
  turn_finish_reasons: tuple[str, ...]  # per generated turn: "stop" (<|im_end|> or a stop string) or "length"
  finish_reason: str  # the episode's end reason, or TOKEN_BUDGET
  num_prefix_turns: int
  prompt_index: int
  spec: Any  # the task's question spec (a replayed prefix's own)
  prompt_text: str
  map_image: np.ndarray  # uint8 [H, W, 3]: the question's image
  feedback_texts: tuple[str, ...]  # environment turns after each non-final turn, prefix included ("": image only)
  feedback_images: tuple[np.ndarray | None, ...]  # None: a text-only feedback turn

  @property
  def truncated(self) -> bool:
    """Some generated turn hit its token budget (or the episode the total budget)."""
    return LENGTH in self.turn_finish_reasons or self.finish_reason == TOKEN_BUDGET

  @property
  def num_turns(self) -> int:
    return len(self.turns)

  def buffer_episode(self, mode: str) -> prefix_buffer_lib.Episode:
    """What `PrefixBuffer.collect` needs from this sample."""
    return prefix_buffer_lib.Episode(
      mode=mode,
      finish_reason=self.finish_reason,
      map_spec=self.spec,
      prompt_text=self.prompt_text,
      assistant_texts=self.turns,
      feedback_texts=self.feedback_texts,
      map_image=self.map_image,
      feedback_images=self.feedback_images,
    )


class _Sample:
  """Host-side record of one sample while it is played."""

  def __init__(self, prompt_index: int, episode, prompt_text: str, map_image: np.ndarray):
    self.prompt_index = prompt_index
    self.episode = episode
    self.prompt_text = prompt_text
    self.map_image = map_image
    self.pieces: list[tuple[np.ndarray, int, int, np.ndarray | None]] = []  # (tokens, kind, turn, log_probs)
    self.images: list[tuple[np.ndarray, np.ndarray]] = []  # (pixel_values, image_grid_thw) per segment
    self.feedback_texts: list[str] = []
    self.feedback_images: list[np.ndarray | None] = []
    self.turn_finish_reasons: list[str] = []
    self.num_prefix_turns = 0
    self.forced_opening = ""
    self.finish_reason: str | None = None

  @property
  def length(self) -> int:
    return sum(len(p[0]) for p in self.pieces)

  def add(self, tokens, kind: int, turn: int = -1, log_probs=None) -> None:
    self.pieces.append((np.asarray(tokens, np.int32).reshape(-1), kind, turn, log_probs))

  def add_segment(self, segment: Segment, kind: int = _ENV) -> None:
    self.add(segment.input_ids, kind)
    if segment.pixel_values is not None:
      self.images.append((segment.pixel_values, segment.image_grid_thw))

  def trajectory(self, patch_dim: int) -> Trajectory:
    tokens = np.concatenate([p[0] for p in self.pieces])
    kinds = np.concatenate([np.full(len(p[0]), p[1], np.int32) for p in self.pieces])
    turns = np.concatenate([np.full(len(p[0]), p[2] if p[1] != _ENV else -1, np.int32) for p in self.pieces])
    log_probs = np.concatenate(
      [np.zeros(len(p[0]), np.float32) if p[3] is None else p[3].astype(np.float32) for p in self.pieces]
    )
    assistant = (kinds != _ENV).astype(np.int32)
    pixels = [p for p, _ in self.images]
    grids = [g for _, g in self.images]
    return Trajectory(
      tokens=tokens,
      assistant_mask=assistant,
      env_mask=1 - assistant,
      turn_index=turns,
      log_probs=log_probs,
      pixel_values=np.concatenate(pixels) if pixels else np.zeros((0, patch_dim), np.float32),
      image_grid_thw=np.concatenate(grids) if grids else np.zeros((0, 3), np.int64),
      turns=tuple(self.episode.turns),
      turn_finish_reasons=tuple(self.turn_finish_reasons),
      finish_reason=self.finish_reason,
      num_prefix_turns=self.num_prefix_turns,
      prompt_index=self.prompt_index,
      spec=self.episode.spec,
      prompt_text=self.prompt_text,
      map_image=self.map_image,
      feedback_texts=tuple(self.feedback_texts),
      feedback_images=tuple(self.feedback_images),
    )


def _as_array(image) -> np.ndarray | None:
  if image is None:
    return None
  return np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, np.uint8)


def _prompt(
  task,
  chat: ChatProcessor,
  spec,
  prefix: prefix_buffer_lib.PrefixEntry | None,
  forced_opening: str | None,
  config: RolloutConfig,
  prompt_index: int,
) -> tuple[Segment, _Sample]:
  """The prompt segment of one question and the record its samples start from (copied per sample)."""
  if prefix is None:
    episode = task.new_episode(spec, max_turns=config.max_turns, style=config.style, **dict(config.episode_options))
    prompt_text, map_image = episode.first_prompt()
  else:
    if not isinstance(prefix, prefix_buffer_lib.PrefixEntry):
      raise ValueError(f"prefixes[{prompt_index}] must be a PrefixEntry or None, got {type(prefix).__name__}")
    episode = task.new_episode(
      prefix.spec, max_turns=config.max_turns, style=config.style, **dict(config.episode_options)
    )
    prompt_text, map_image = prefix.prompt_text, prefix.map_image
  sample = _Sample(prompt_index, episode, prompt_text, _as_array(map_image))
  segment = Segment.from_encoding(chat.encode([conversation.user_message(map_image, prompt_text)]))
  sample.add_segment(segment)
  if prefix is not None:
    im_end = chat.token_ids.im_end_id
    environment_opening = None
    for turn, (text, feedback, image) in enumerate(
      zip(prefix.assistant_texts, prefix.feedback_texts, prefix.feedback_images)
    ):
      step = episode.step(text)
      environment_opening = getattr(step, "next_opening", None)
      if step.done:
        raise ValueError(
          f"prefixes[{prompt_index}]: replayed turn {turn} ends the episode ({step.reason}); a "
          f"prefix must hold non-final turns only, fewer than max_turns={config.max_turns}"
        )
      sample.add(np.append(chat.encode_text(text), im_end), _ASSISTANT, turn)
      feedback_segment = Segment.from_encoding(
        chat.encode_segment([conversation.user_message(image, feedback)], prefix_ends_with="im_end")
      )
      sample.add_segment(feedback_segment)
      sample.feedback_texts.append(feedback)
      sample.feedback_images.append(_as_array(image))
    sample.num_prefix_turns = prefix.num_route_turns
    # The environment's own opening of the turn after the prefix (a forced answer) takes the place of the caller's.
    forced_opening = environment_opening or forced_opening
  if forced_opening:
    opening = chat.encode_text(forced_opening)
    sample.add(opening, _ENV)
    sample.forced_opening = forced_opening
  tokens = np.concatenate([p[0] for p in sample.pieces])
  pixels = [p for p, _ in sample.images]
  grids = [g for _, g in sample.images]
  return Segment(tokens, np.concatenate(pixels), np.concatenate(grids)), sample


def _copy_sample(task, sample: _Sample, config: RolloutConfig) -> _Sample:
  copy = _Sample(
    sample.prompt_index,
    task.new_episode(
      sample.episode.spec, max_turns=config.max_turns, style=config.style, **dict(config.episode_options)
    ),
    sample.prompt_text,
    sample.map_image,
  )
  for text in sample.episode.turns:
    copy.episode.step(text)
  copy.pieces = list(sample.pieces)
  copy.images = list(sample.images)
  copy.feedback_texts = list(sample.feedback_texts)
  copy.feedback_images = list(sample.feedback_images)
  copy.num_prefix_turns = sample.num_prefix_turns
  copy.forced_opening = sample.forced_opening
  return copy


def rollout(
  task,
  sampler: Sampler,
  chat: ChatProcessor,
  params,
  specs: Sequence,
  n_per_prompt: int,
  *,
  prefixes: Sequence[prefix_buffer_lib.PrefixEntry | None] | None = None,
  forced_openings: Sequence[str | None] | None = None,
  config: RolloutConfig = RolloutConfig(),
  rng: jax.Array,
) -> list[Trajectory]:
  """Plays `n_per_prompt` episodes per prompt of `task` (a `vrrl_jax.tasks.Task`); returns one Trajectory per
  sample, prompt-major (sample s belongs to prompt s // n_per_prompt).

  specs[i]: the question spec of question i (or its dict); replaced by prefixes[i].spec when a prefix is given.
  prefixes[i]: a PrefixEntry to replay (its turns count towards max_turns) or None. forced_openings[i]: text the
  first generated turn of question i starts with (e.g. "<THINK>" for wrong-type prefixes) or None.
  """
  specs = list(specs)
  if not specs:
    raise ValueError("rollout needs at least one question spec")
  prefixes = [None] * len(specs) if prefixes is None else list(prefixes)
  forced_openings = [None] * len(specs) if forced_openings is None else list(forced_openings)
  if len(prefixes) != len(specs) or len(forced_openings) != len(specs):
    raise ValueError(
      f"got {len(specs)} specs, {len(prefixes)} prefixes and {len(forced_openings)} forced "
      "openings; give one of each per question (None where unused)"
    )
  for i, opening in enumerate(forced_openings):
    if opening is not None and not isinstance(opening, str):
      raise ValueError(f"forced_openings[{i}] must be a str or None, got {type(opening).__name__}")
  sampling = config.sampling(chat)
  im_end = chat.token_ids.im_end_id

  prompts, templates = zip(
    *(
      _prompt(task, chat, spec, prefix, opening, config, i)
      for i, (spec, prefix, opening) in enumerate(zip(specs, prefixes, forced_openings))
    )
  )
  samples = [_copy_sample(task, templates[s // n_per_prompt], config) for s in range(len(specs) * n_per_prompt)]
  budgets = []
  for s, sample in enumerate(samples):
    room = config.max_sequence_len - sample.length - _CLOSING_TOKENS
    if room < 1:
      raise ValueError(
        f"question {s // n_per_prompt}: the prompt has {sample.length} tokens, no room left within "
        f"max_sequence_len={config.max_sequence_len}"
      )
    budgets.append(min(config.max_new_tokens, room))

  rng, turn_rng = jax.random.split(rng)
  state, turn = sampler.start(
    params, list(prompts), sampling, turn_rng, n_per_prompt=n_per_prompt, max_new_tokens=budgets
  )
  while True:
    continuing, segments, budgets, dropped = [], [], [], {}
    for s, tokens, log_probs, reason in zip(turn.sample_ids, turn.tokens, turn.log_probs, turn.finish_reasons):
      sample = samples[s]
      cut = stop_string_cut(chat.tokenizer, tokens, config.stop_strings) if config.stop_strings else None
      if cut is not None:  # the turn ends at a stop string: what followed it is dropped, the environment closes it
        dropped[int(s)] = len(tokens) - cut
        tokens, log_probs, reason = tokens[:cut], log_probs[:cut], STOP
      stopped = reason == STOP and cut is None  # the policy's own <|im_end|> ends the turn
      turn_number = len(sample.episode.turns)
      sample.add(tokens, _SAMPLED, turn_number, log_probs)
      sample.turn_finish_reasons.append(reason)
      text = chat.tokenizer.decode((tokens[:-1] if stopped else tokens).tolist(), skip_special_tokens=False)
      step = sample.episode.step(sample.forced_opening + text)
      sample.forced_opening = ""
      if not step.done:
        feedback = Segment.from_encoding(
          chat.encode_segment(
            [conversation.user_message(step.feedback_image, step.feedback_text)],
            prefix_ends_with="im_end" if stopped else "text",
          )
        )
        opening = getattr(step, "next_opening", None) or ""
        opening_ids = chat.encode_text(opening) if opening else np.zeros(0, np.int32)
        room = config.max_sequence_len - sample.length - len(feedback) - len(opening_ids) - _CLOSING_TOKENS
        if room >= 1:
          sample.add_segment(feedback)
          sample.feedback_texts.append(step.feedback_text or "")
          sample.feedback_images.append(_as_array(step.feedback_image))
          if opening:
            sample.add(opening_ids, _ENV)
            sample.forced_opening = opening
            feedback = Segment(
              np.concatenate([feedback.input_ids, opening_ids]), feedback.pixel_values, feedback.image_grid_thw
            )
          continuing.append(int(s))
          segments.append(feedback)
          budgets.append(min(config.max_new_tokens, room))
          continue
      sample.finish_reason = step.reason if step.done else TOKEN_BUDGET
      # The chat template closes the last assistant turn with "<|im_end|>\n".
      closing = chat.encode_text("\n")
      sample.add(closing if stopped else np.append([im_end], closing), _ENV)
    if not continuing:
      break
    if rewound := [s for s in continuing if dropped.get(s)]:
      state = sampler.rewind(state, rewound, [dropped[s] for s in rewound])
    rng, turn_rng = jax.random.split(rng)
    state, turn = sampler.extend(params, state, continuing, segments, sampling, turn_rng, max_new_tokens=budgets)
  patch_dim = chat.image_config.patch_dim
  return [sample.trajectory(patch_dim) for sample in samples]


def stop_string_cut(tokenizer, tokens: np.ndarray, stop_strings: Sequence[str]) -> int | None:
  """How many leading ``tokens`` a turn keeps when it ends at a stop string: the shortest prefix whose text contains
  one (its last token completes the match), or None when the turn's text has none."""
  decode = lambda n: tokenizer.decode(tokens[:n].tolist(), skip_special_tokens=False)  # noqa: E731
  if not any(stop in decode(len(tokens)) for stop in stop_strings):
    return None
  low, high = 1, len(tokens)  # containment grows with the prefix: bisect for the first prefix that has a match
  while low < high:
    middle = (low + high) // 2
    if any(stop in decode(middle) for stop in stop_strings):
      high = middle
    else:
      low = middle + 1
  return low


def pad_trajectories(trajectories: Sequence[Trajectory], pad_token_id: int, length: int | None = None) -> dict:
  """Right-padded [B, S] arrays (tokens, attention_mask, assistant_mask, env_mask, turn_index (-1 on padding),
  log_probs) plus every image in row order (pixel_values, image_grid_thw), num_turns and num_prefix_turns [B]: the
  inputs of one trainer forward over the batch."""
  trajectories = list(trajectories)
  longest = max(len(t.tokens) for t in trajectories)
  length = longest if length is None else length
  if length < longest:
    raise ValueError(f"length {length} is shorter than the longest trajectory ({longest} tokens)")
  batch = len(trajectories)
  out = dict(
    tokens=np.full((batch, length), pad_token_id, np.int32),
    attention_mask=np.zeros((batch, length), np.int32),
    assistant_mask=np.zeros((batch, length), np.int32),
    env_mask=np.zeros((batch, length), np.int32),
    turn_index=np.full((batch, length), -1, np.int32),
    log_probs=np.zeros((batch, length), np.float32),
  )
  for b, t in enumerate(trajectories):
    n = len(t.tokens)
    out["tokens"][b, :n] = t.tokens
    out["attention_mask"][b, :n] = 1
    out["assistant_mask"][b, :n] = t.assistant_mask
    out["env_mask"][b, :n] = t.env_mask
    out["turn_index"][b, :n] = t.turn_index
    out["log_probs"][b, :n] = t.log_probs
  out["pixel_values"] = np.concatenate([t.pixel_values for t in trajectories])
  out["image_grid_thw"] = np.concatenate([t.image_grid_thw for t in trajectories])
  out["num_turns"] = np.array([t.num_turns for t in trajectories], np.int32)
  out["num_prefix_turns"] = np.array([t.num_prefix_turns for t in trajectories], np.int32)
  return out
