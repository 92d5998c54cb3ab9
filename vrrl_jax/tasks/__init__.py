"""Tasks: what a run is handed, chosen by name (``config.task``), big_vision style.

A task is a package ``vrrl_jax.tasks.<name>`` whose ``__init__`` provides the names of ``Task`` below. The sampler, the
rollout driver, the replay buffer, the RL/SFT steps and the run loop reach a task only through these names, never by
importing a concrete one (``tests/test_task_seam.py`` checks the import graph).
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping, Protocol, Sequence

import numpy as np


class Episode(Protocol):
  """One conversation on one question, played turn by turn by the rollout driver."""

  spec: Any
  turns: list[str]
  images: list  # the question's image first

  def first_prompt(self) -> tuple[str, Any]:
    """(user text, image) of the first user turn."""

  def step(self, assistant_text: str) -> Any:
    """The environment's answer to one assistant turn: an object with ``done``, ``reason`` (when done),
    ``feedback_text`` and ``feedback_image`` (when not done), and optionally ``next_opening``: text the next
    assistant turn is forced to start with (environment tokens; the turn text handed back to ``step`` includes it).
    ``feedback_text`` may place the image with ``vrrl_jax.data.conversation.IMAGE_PLACEHOLDER``."""


class Task(Protocol):
  """The surface of a task package. Functions that take ``config`` read the task's own sections of the run config
  (``data``, ``sft.transcripts``, ``rl.reward``, ``eval``)."""

  TRAIN_MAX_TURNS: int
  EVAL_MAX_TURNS: int
  # Opening forced onto the first new turn after a replayed wrong-type prefix, so the model revises (VRRL_SPEC 3).
  REVISION_OPENING: str
  EVAL_KEYS: tuple[str, ...]  # the task's own keys of config.eval (which eval examples)
  SUCCESS_METRIC: str  # the reward metric (0/1) that says the committed answer was right; logged per rollout mode
  TURN_STOP_STRINGS: tuple[str, ...]  # text that ends an assistant turn besides <|im_end|> (RolloutConfig.stop_strings)

  # Data: examples carry ``.spec``, ``.style`` (render style of their images) and ``.map_id`` (a stable id).
  def data_config(self, config) -> Any: ...  # ``config.data``, checked
  def check_eval_config(self, config) -> None: ...  # the task's keys of ``config.eval``
  def train_examples(self, config) -> list: ...
  def eval_examples(self, config) -> list: ...
  def parse_spec(self, spec) -> Any: ...
  def max_image_side(
    self, config
  ) -> int: ...  # pixels of the longest side of any training image (the planner)  # a spec object (``.to_dict()``, ``.question_id``) from a spec or its dict

  # Episodes. ``episode_options(config)``: the run's options for reading model text (e.g. grounding's pointing
  # format), passed as keyword arguments to new_episode, prefix_verdict, read_proposal and is_correct.
  def episode_options(self, config) -> dict[str, Any]: ...
  def new_episode(self, spec, *, max_turns: int, style: str, **options) -> Episode: ...

  # Reward: one float64 [batch] array per metric, "overall" among them. ``buffer_fields`` is columnar:
  # is_prefix_buffer_rollout, prefix_buffer_type, prefix_buffer_num_turns.
  def reward_config(self, config) -> Any: ...
  def score_batch(
    self, turns_batch: Sequence[Sequence[str]], specs: Sequence, reward_config, buffer_fields: Mapping | None = None
  ) -> dict[str, np.ndarray]: ...

  # SFT warm start: chat messages of one scripted transcript (conversation.encode_conversation's input).
  def transcript_config(self, config) -> Any: ...
  def sft_messages(self, spec, rng: np.random.Generator, transcript_config, wrong_turn_loss: bool) -> list[dict]: ...

  # Replay buffer: (prefix type "right"/"wrong", None) for a collectable finished episode, else (None, skip reason).
  def prefix_verdict(
    self, spec, assistant_texts: Sequence[str], max_route_turns: int, **options
  ) -> tuple[str | None, str | None]: ...

  # The grounding probe: a turn's proposal (a hashable, None when the turn proposes nothing) and its verdict.
  def read_proposal(self, text: str, **options) -> Any: ...
  def is_correct(self, spec, proposal, **options) -> bool: ...

  # Evaluation: per-episode records, their aggregate (metrics.json), its headline numbers, a gallery description.
  def episode_record(self, example, trajectory) -> Any: ...
  def aggregate(self, records: Sequence) -> dict: ...
  def headline(self, metrics: Mapping) -> dict[str, float]: ...
  def record_metrics(self, record) -> dict[str, Any]: ...
  def describe(self, spec) -> str: ...
  def gallery_image(self, spec, image, turns: Sequence[str], **options) -> Any: ...  # the question's image, annotated

  EVAL_BAR_METRIC: str  # what the run figure's eval bars show

  def eval_bars(self, metrics: Mapping) -> dict[str, float]: ...  # {group: value}, in drawing order
  def group_of(self, spec) -> Any: ...


def load(name: str) -> Task:
  """The task package ``vrrl_jax.tasks.<name>``; a clear error for a name that is not one."""
  if not isinstance(name, str) or not name.isidentifier():
    raise ValueError(f"config.task must be a task package name like 'frozenlake', got {name!r}")
  try:
    module = importlib.import_module(f"vrrl_jax.tasks.{name}")
  except ModuleNotFoundError as e:
    if e.name != f"vrrl_jax.tasks.{name}":
      raise
    raise ValueError(f"unknown task {name!r}: there is no package vrrl_jax.tasks.{name}") from None
  missing = [attr for attr in _SURFACE if not hasattr(module, attr)]
  if missing:
    raise ValueError(f"vrrl_jax.tasks.{name} is not a task: it lacks {missing}")
  return module


_SURFACE = tuple(
  name for name in list(Task.__annotations__) + [n for n in vars(Task) if not n.startswith("_")] if name != "self"
)
