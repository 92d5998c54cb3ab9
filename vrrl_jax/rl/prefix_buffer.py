"""Host-side replay buffer of on-policy conversation prefixes ("buffered roll-ins", VRRL_SPEC section 3).

After every rollout, finished non-buffer episodes that committed cleanly after 1..2 proposals (FrozenLake: a
``<FINAL>`` after its routes) are stored as *prefixes*: the conversation up to, not including, the committing turn
(so it ends with the last feedback image), typed ``wrong`` or ``right``. Which episodes qualify and their type is
the task's call (``task.prefix_verdict``); the buffer itself knows no task. A later
``prefix_buffer``-mode question replays one prefix for all its samples, so the model practises the
turn after a (mostly wrong) committed route instead of only ever seeing its own fresh first turns.

The policy is upstream's (fc2869/VRRL ``frozenlake_prefix_buffer.py`` + ``_collect_buffer_entries``):
FIFO capacity, a per-question cap with turn-count-diverse eviction, staleness, a minimum size,
a wrong/right ratio with probabilistic rounding, round-robin stratification over turn counts,
no re-sampling (per run upstream; per epoch here when ``resample="epoch"``) and a top-up from the
other type. All randomness comes from one seeded ``numpy`` PCG64 generator owned by the buffer, so
``state_dict()``/``load_state_dict()`` (plain numpy arrays and ints, orbax- and npz-safe) restore the
exact future samples. Identical images (a question's map, the feedback of a repeated route) are
stored once.

Typical use in the trainer, once per step ``t``::

    if a new pass over the prompts began: buffer.start_epoch()
    entries = buffer.sample(len(buffer_questions)) if buffer.can_sample() else []
    ... roll out; questions left without an entry fall back to another mode ...
    buffer.collect(episodes, step=t)
    buffer.set_step(t)
    log(buffer.stats())
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import numbers
import json
import math
import os
import pathlib
import weakref
from typing import Any, Mapping, Sequence

import numpy as np

WRONG = "wrong"
RIGHT = "right"
PREFIX_TYPES = (WRONG, RIGHT)

MODE_NORMAL = "normal"
MODE_RANDOM_START = "random_start"
# A roll-in the task injects (grounding: VRRL's random_init, a first look near but not on the target), replayed as a
# one-turn prefix whose turn never carries loss; only tasks with ``random_init_turn`` offer it.
MODE_RANDOM_INIT = "random_init"
MODE_PREFIX_BUFFER = "prefix_buffer"
ROLLOUT_MODES = (MODE_NORMAL, MODE_RANDOM_START, MODE_PREFIX_BUFFER, MODE_RANDOM_INIT)
# Episodes the rollout stopped for these reasons never feed the buffer (upstream's rule).
SKIPPED_FINISH_REASONS = ("format_error", "render_error")

RESAMPLE_SCOPES = ("epoch", "run")
_STATE_VERSION = 2  # 2: specs stored as the task's JSON dict
_V1 = 1  # written before the task seam: FrozenLake's layout string + start_pos/target_pos columns (still read)


@dataclasses.dataclass(frozen=True)
class BufferFields:
  """Per-sample prefix-buffer metadata, as upstream's reward manager passes it to the reward (every task's).

  ``prefix_buffer_num_turns`` is the entry's number of route turns, i.e. the number of assistant
  turns of the replayed prefix at the head of ``turns``.
  """

  is_prefix_buffer_rollout: bool = False
  prefix_buffer_type: str | None = None
  prefix_buffer_num_turns: int = 0

  def __post_init__(self):
    if not isinstance(self.is_prefix_buffer_rollout, (bool, np.bool_)):
      raise ValueError(f"is_prefix_buffer_rollout must be a bool, got {self.is_prefix_buffer_rollout!r}")
    flag = bool(self.is_prefix_buffer_rollout)
    object.__setattr__(self, "is_prefix_buffer_rollout", flag)
    if self.prefix_buffer_type not in (None, "") + PREFIX_TYPES:
      raise ValueError(f"prefix_buffer_type must be one of {PREFIX_TYPES} or None, got {self.prefix_buffer_type!r}")
    num = self.prefix_buffer_num_turns
    if isinstance(num, bool) or not isinstance(num, numbers.Integral) or num < 0:
      raise ValueError(f"prefix_buffer_num_turns must be an int >= 0, got {num!r}")
    object.__setattr__(self, "prefix_buffer_num_turns", int(num))
    if flag and (self.prefix_buffer_type not in PREFIX_TYPES or self.prefix_buffer_num_turns < 1):
      raise ValueError(
        "a prefix-buffer rollout needs prefix_buffer_type in ('wrong', 'right') and "
        f"prefix_buffer_num_turns >= 1, got {self.prefix_buffer_type!r}, {self.prefix_buffer_num_turns}"
      )


BUFFER_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(BufferFields))


def buffer_fields_of(item: Any, where: str) -> BufferFields:
  """One sample's BufferFields from itself, a mapping of its fields, or None (no buffer rollout); ``where`` names
  the argument in errors."""
  if item is None:
    return BufferFields()
  if isinstance(item, BufferFields):
    return item
  if isinstance(item, Mapping):
    unknown = sorted(set(item) - BUFFER_FIELD_NAMES)
    if unknown:
      raise ValueError(f"{where} has unknown key(s) {unknown}; expected {sorted(BUFFER_FIELD_NAMES)}")
    return BufferFields(**item)
  raise ValueError(f"{where} must be a BufferFields, a mapping or None, got {type(item).__name__}")


def per_sample_buffer_fields(buffer_fields: Any, batch: int) -> list[BufferFields]:
  """``buffer_fields`` as one ``BufferFields`` per sample: None (no buffer rollouts), per sample (a sequence of
  BufferFields / mappings / None) or columnar (a mapping from field name to a length-``batch`` sequence, as the RL
  loop passes it)."""
  if buffer_fields is None:
    return [BufferFields()] * batch
  if isinstance(buffer_fields, Mapping):
    unknown = sorted(set(buffer_fields) - BUFFER_FIELD_NAMES)
    if unknown:
      raise ValueError(f"buffer_fields has unknown key(s) {unknown}; expected {sorted(BUFFER_FIELD_NAMES)}")
    columns = {k: list(v) for k, v in buffer_fields.items()}
    for name, column in columns.items():
      if len(column) != batch:
        raise ValueError(f"buffer_fields[{name!r}] has {len(column)} entries, expected {batch}")
    return [BufferFields(**{k: v[i] for k, v in columns.items()}) for i in range(batch)]
  items = list(buffer_fields)
  if len(items) != batch:
    raise ValueError(f"buffer_fields has {len(items)} entries, expected {batch}")
  return [buffer_fields_of(item, f"buffer_fields[{i}]") for i, item in enumerate(items)]


@dataclasses.dataclass(frozen=True)
class PrefixBufferConfig:
  """Buffer policy. Defaults are the released recipe (run script of fc2869/VRRL).

  ``resample``: ``"run"`` never clears the set of already-replayed entries (upstream: an entry is
  replayed at most once per run); ``"epoch"`` clears it whenever ``start_epoch()`` is called, the
  documented intent (an epoch = one pass over the training prompts).
  """

  capacity: int = 500
  max_per_question: int = 3
  max_staleness_steps: int = 50
  min_size: int = 32
  wrong_ratio: float = 0.9
  max_route_turns: int = 2
  resample: str = "run"

  def __post_init__(self):
    for name, lowest in (
      ("capacity", 1),
      ("max_per_question", 1),
      ("max_staleness_steps", 0),
      ("min_size", 0),
      ("max_route_turns", 1),
    ):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"PrefixBufferConfig.{name} must be an integer, got {value!r}")
      if value < lowest:
        raise ValueError(f"PrefixBufferConfig.{name} must be >= {lowest}, got {value}")
    if self.min_size > self.capacity:
      raise ValueError(
        f"PrefixBufferConfig.min_size={self.min_size} exceeds capacity={self.capacity}: "
        "the buffer could never be sampled"
      )
    ratio = self.wrong_ratio
    if (
      isinstance(ratio, bool)
      or not isinstance(ratio, (int, float, np.floating, np.integer))
      or not 0.0 <= float(ratio) <= 1.0
    ):
      raise ValueError(f"PrefixBufferConfig.wrong_ratio must be a number in [0, 1], got {ratio!r}")
    if self.resample not in RESAMPLE_SCOPES:
      raise ValueError(f"PrefixBufferConfig.resample must be one of {RESAMPLE_SCOPES}, got {self.resample!r}")


def _checked_image(image: Any, what: str) -> np.ndarray:
  """``image`` as a uint8 ``[H, W, 3]`` array, not copied if it is one (PIL RGB images convert)."""
  arr = np.asarray(image)
  if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
    raise ValueError(f"{what} must be a non-empty uint8 [H, W, 3] image, got dtype {arr.dtype} shape {arr.shape}")
  return arr


def _frozen_image(image: Any, what: str) -> np.ndarray:
  """A read-only array the caller cannot change: a private copy, unless ``image`` already is a
  read-only array owning its data (the buffer's pooled images, shared between entries)."""
  arr = _checked_image(image, what)
  if arr.flags.writeable or not arr.flags.owndata or not arr.flags.c_contiguous:
    arr = np.array(arr, copy=True, order="C")
    arr.flags.writeable = False
  return arr


def _image_key(image: np.ndarray) -> tuple:
  # sha1 for speed (hardware-accelerated, ~3x blake2b here); this is a content key, not security.
  return image.shape, hashlib.sha1(np.ascontiguousarray(image).data).digest()


@dataclasses.dataclass(frozen=True, eq=False)  # identity: field-wise == on images is ambiguous
class PrefixEntry:
  """One replayable prefix: ``prompt_text`` with ``map_image``, then for each route turn ``i`` the
  assistant text ``assistant_texts[i]`` and the environment's answer (``feedback_texts[i]`` +
  ``feedback_images[i]``). ``final_text`` is the FINAL turn that was cut off (kept for logging and
  a correct-replay variant; it is not part of the prefix). ``entry_id`` is set by the buffer."""

  spec: Any  # the task's parsed question spec (``.to_dict()``, ``.question_id``)
  prefix_type: str
  collection_step: int
  prompt_text: str
  assistant_texts: tuple[str, ...]
  feedback_texts: tuple[str, ...]
  final_text: str
  map_image: np.ndarray
  feedback_images: tuple[np.ndarray, ...]
  entry_id: int = -1
  question_id: tuple = dataclasses.field(init=False, repr=False)

  def __post_init__(self):
    if not (hasattr(self.spec, "question_id") and hasattr(self.spec, "to_dict")):
      raise ValueError(f"spec must be a task's parsed spec (question_id, to_dict), got {type(self.spec).__name__}")
    object.__setattr__(self, "question_id", self.spec.question_id)
    if self.prefix_type not in PREFIX_TYPES:
      raise ValueError(f"prefix_type must be one of {PREFIX_TYPES}, got {self.prefix_type!r}")
    object.__setattr__(self, "assistant_texts", tuple(self.assistant_texts))
    object.__setattr__(self, "feedback_texts", tuple(self.feedback_texts))
    n = len(self.assistant_texts)
    if n < 1:
      raise ValueError("a prefix needs at least one route turn")
    if len(self.feedback_texts) != n or len(self.feedback_images) != n:
      raise ValueError(
        f"a prefix with {n} route turns needs {n} feedback texts and images, got "
        f"{len(self.feedback_texts)} texts and {len(self.feedback_images)} images"
      )
    for name in ("prompt_text", "final_text"):
      if not isinstance(getattr(self, name), str):
        raise ValueError(f"{name} must be a str, got {type(getattr(self, name)).__name__}")
    if not all(isinstance(t, str) for t in self.assistant_texts + self.feedback_texts):
      raise ValueError("assistant_texts and feedback_texts must be strings")
    object.__setattr__(self, "map_image", _frozen_image(self.map_image, "map_image"))
    object.__setattr__(
      self,
      "feedback_images",
      tuple(
        None if img is None else _frozen_image(img, f"feedback_images[{i}]")
        for i, img in enumerate(self.feedback_images)
      ),
    )
    object.__setattr__(self, "collection_step", int(self.collection_step))
    object.__setattr__(self, "entry_id", int(self.entry_id))

  @property
  def num_route_turns(self) -> int:
    return len(self.assistant_texts)

  @property
  def is_wrong(self) -> bool:
    return self.prefix_type == WRONG

  @property
  def map_spec(self) -> dict[str, Any]:
    """The entry's own question; a replaying rollout uses it (not its prompt's) as the reward's truth."""
    return self.spec.to_dict()

  @property
  def images(self) -> tuple[np.ndarray | None, ...]:
    """All images in conversation order: the question's, then each feedback turn's (None: a text-only turn)."""
    return (self.map_image,) + self.feedback_images

  def conversation(self) -> list[dict[str, Any]]:
    """The prefix as chat turns ``{"role", "text", "image"}`` ending with the last feedback turn."""
    turns = [{"role": "user", "text": self.prompt_text, "image": self.map_image}]
    for text, feedback, image in zip(self.assistant_texts, self.feedback_texts, self.feedback_images):
      turns.append({"role": "assistant", "text": text, "image": None})
      turns.append({"role": "user", "text": feedback, "image": image})
    return turns


@dataclasses.dataclass(frozen=True, eq=False)
class Episode:
  """A finished rollout sample, as the collector needs it.

  ``assistant_texts`` holds every generated assistant turn (the FINAL included) as raw model text;
  ``feedback_texts``/``feedback_images`` hold the environment turn that followed each non-final
  turn. ``finish_reason`` is the rollout's stop reason; ``"format_error"`` and ``"render_error"``
  exclude the episode, anything else (``None``, ``"final"``, ``"length"``, ...) is judged from the
  turns. ``prompt_text`` is the first user turn's text (shown with ``map_image``)."""

  mode: str
  finish_reason: str | None
  map_spec: Any  # the task's spec or its dict
  prompt_text: str
  assistant_texts: Sequence[str]
  feedback_texts: Sequence[str]
  map_image: Any
  feedback_images: Sequence[Any]


def _mode_skip_reason(episode: Episode) -> str | None:
  """Why ``episode`` is not collected whatever its turns (a short metric name), or None."""
  if episode.mode not in ROLLOUT_MODES:
    raise ValueError(f"unknown rollout mode {episode.mode!r}; expected one of {ROLLOUT_MODES}")
  if episode.mode == MODE_PREFIX_BUFFER:
    return "buffer_mode"
  if episode.mode == MODE_RANDOM_INIT:  # its first turn was injected, not the policy's
    return "roll_in_mode"
  if episode.finish_reason in SKIPPED_FINISH_REASONS:
    return "format_or_render_error"
  return None


class PrefixBuffer:
  """FIFO store of ``PrefixEntry`` with upstream's eviction and sampling policy (module docstring)."""

  def __init__(self, config: PrefixBufferConfig = PrefixBufferConfig(), *, seed: int, task, task_options=None):
    """``task`` (a ``vrrl_jax.tasks.Task``) parses specs and judges which episodes become prefixes, reading their
    text with ``task_options`` (``task.episode_options(config)``)."""
    if not isinstance(config, PrefixBufferConfig):
      raise ValueError(f"config must be a PrefixBufferConfig, got {type(config).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
      raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    self.config = config
    self.task = task
    self.task_options = dict(task_options or {})
    self._rng = np.random.Generator(np.random.PCG64(int(seed)))
    self._entries: list[PrefixEntry] = []  # oldest first
    # Identical images (a question's map; the feedback of a repeated route) are stored once: entries
    # hold the pooled array, and an image leaves the pool when its last entry is gone.
    self._image_pool: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
    self._sampled_ids: set[int] = set()
    self._next_entry_id = 0
    self._step = 0
    self._counters = dict.fromkeys(_COUNTER_NAMES, 0)

  # -- contents -------------------------------------------------------------------------------------

  def __len__(self) -> int:
    return len(self._entries)

  @property
  def entries(self) -> tuple[PrefixEntry, ...]:
    """Current entries, oldest first."""
    return tuple(self._entries)

  @property
  def step(self) -> int:
    return self._step

  def set_step(self, step: int) -> None:
    """Sets the training step that staleness is measured against (never backwards)."""
    step = _as_int(step, "step")
    if step < self._step:
      raise ValueError(f"buffer step cannot go back from {self._step} to {step}")
    self._step = step

  def start_epoch(self) -> None:
    """Tells the buffer a new pass over the prompts began: with ``resample="epoch"`` every entry
    becomes replayable again; with ``"run"`` (upstream) nothing changes."""
    if self.config.resample == "epoch":
      self._sampled_ids.clear()

  def add(self, entry: PrefixEntry) -> PrefixEntry:
    """Stores ``entry`` (returned with its id) after making room, as upstream does: first the
    per-question cap, then the global FIFO capacity."""
    return self._insert(
      dataclasses.replace(
        entry,
        map_image=self._pooled(entry.map_image, "map_image"),
        feedback_images=tuple(self._pooled(img, "feedback image") for img in entry.feedback_images),
      )
    )

  def _insert(self, entry: PrefixEntry) -> PrefixEntry:
    """``add`` for an entry whose images are already pooled."""
    entry = dataclasses.replace(entry, entry_id=self._next_entry_id)
    self._next_entry_id += 1
    same_question = [e for e in self._entries if e.question_id == entry.question_id]
    if len(same_question) >= self.config.max_per_question:
      self._remove(_question_victim(same_question, entry.num_route_turns))
      self._counters["evicted_question_cap"] += 1
    if len(self._entries) >= self.config.capacity:
      self._remove(self._entries[0])
      self._counters["evicted_capacity"] += 1
    self._entries.append(entry)
    self._counters["added"] += 1
    return entry

  def _pooled(self, image: Any, what: str) -> np.ndarray | None:
    """The stored array equal to ``image`` (None stays None); a new image is copied in (hashing reads it once)."""
    if image is None:
      return None
    image = _checked_image(image, what)
    key = _image_key(image)
    pooled = self._image_pool.get(key)
    if pooled is None:
      pooled = self._image_pool[key] = _frozen_image(image, what)
    return pooled

  def _remove(self, entry: PrefixEntry) -> None:
    self._entries.remove(entry)
    self._sampled_ids.discard(entry.entry_id)

  def collect(self, episodes: Sequence[Episode], *, step: int) -> dict[str, int]:
    """Adds every eligible episode (VRRL_SPEC section 3) stamped with ``step``; returns counts of
    added entries by type and of skipped episodes by reason (``skipped_<reason>``)."""
    step = _as_int(step, "step")
    counts = {"added_wrong": 0, "added_right": 0}
    for episode in episodes:
      texts = list(episode.assistant_texts)
      spec = self.task.parse_spec(episode.map_spec)
      reason = _mode_skip_reason(episode)
      prefix_type = None
      if reason is None:
        prefix_type, reason = self.task.prefix_verdict(spec, texts, self.config.max_route_turns, **self.task_options)
      if reason is not None:
        counts[f"skipped_{reason}"] = counts.get(f"skipped_{reason}", 0) + 1
        continue
      if prefix_type not in PREFIX_TYPES:
        raise ValueError(f"task.prefix_verdict gave prefix type {prefix_type!r}; expected one of {PREFIX_TYPES}")
      self._insert(
        PrefixEntry(
          spec=spec,
          prefix_type=prefix_type,
          collection_step=step,
          prompt_text=episode.prompt_text,
          assistant_texts=tuple(texts[:-1]),
          feedback_texts=tuple(episode.feedback_texts),
          final_text=texts[-1],
          map_image=self._pooled(episode.map_image, "map_image"),
          feedback_images=tuple(self._pooled(img, "feedback image") for img in episode.feedback_images),
        )
      )
      counts[f"added_{prefix_type}"] += 1
    return counts

  # -- sampling -------------------------------------------------------------------------------------

  def _is_fresh(self, entry: PrefixEntry) -> bool:
    return self._step - entry.collection_step <= self.config.max_staleness_steps

  def _available(self) -> list[PrefixEntry]:
    """Fresh entries not replayed yet (in this epoch or run), oldest first."""
    return [e for e in self._entries if self._is_fresh(e) and e.entry_id not in self._sampled_ids]

  def can_sample(self) -> bool:
    """Whether ``prefix_buffer`` mode may be drawn: enough entries, and one of them available."""
    return len(self._entries) >= self.config.min_size and bool(self._available())

  def sample(self, n: int) -> list[PrefixEntry]:
    """Draws up to ``n`` distinct available entries, wrong ones first. Fewer come back when the
    buffer runs dry (the caller gives those questions another mode); none below ``min_size``."""
    n = _as_int(n, "n")
    if len(self._entries) < self.config.min_size:
      return []
    # Probabilistic rounding, so that with n = 1 a wrong entry is drawn with probability wrong_ratio.
    n_wrong_float = n * float(self.config.wrong_ratio)
    n_wrong = math.floor(n_wrong_float)
    fraction = n_wrong_float - n_wrong
    if fraction > 0 and self._rng.random() < fraction:
      n_wrong += 1
    available = self._available()
    chosen = self._stratified([e for e in available if e.is_wrong], n_wrong)
    chosen += self._stratified([e for e in available if not e.is_wrong], n - n_wrong)
    if len(chosen) < n:  # top up from whatever type is left
      taken = {e.entry_id for e in chosen}
      chosen += self._stratified([e for e in available if e.entry_id not in taken], n - len(chosen))
    self._sampled_ids.update(e.entry_id for e in chosen)
    self._counters["sampled"] += len(chosen)
    return chosen

  def _stratified(self, candidates: list[PrefixEntry], n: int) -> list[PrefixEntry]:
    """Round-robin over turn counts (ascending, from a random one), uniform within each."""
    if not candidates or n <= 0:
      return []
    by_turns = collections.defaultdict(list)
    for e in candidates:
      by_turns[e.num_route_turns].append(e)
    turn_counts = sorted(by_turns)
    position = int(self._rng.integers(len(turn_counts)))
    chosen = []
    while len(chosen) < n and turn_counts:
      position %= len(turn_counts)
      group = by_turns[turn_counts[position]]
      chosen.append(group.pop(int(self._rng.integers(len(group)))))
      if group:
        position += 1
      else:  # the next turn count slides into this position
        del turn_counts[position]
    return chosen

  # -- logging --------------------------------------------------------------------------------------

  def stats(self) -> dict[str, float | int]:
    """Buffer statistics with upstream's ``get_stats`` names (logged as ``prefix_buffer/<name>``),
    plus staleness, sampled fraction and cumulative add/evict/sample counters."""
    size = len(self._entries)
    denominator = max(size, 1)
    n_wrong = sum(e.is_wrong for e in self._entries)
    fresh = [e for e in self._entries if self._is_fresh(e)]
    n_sampled = sum(e.entry_id in self._sampled_ids for e in self._entries)
    per_question = collections.Counter(e.question_id for e in self._entries)
    staleness = [self._step - e.collection_step for e in self._entries]
    images = {id(img): img for e in self._entries for img in e.images if img is not None}
    out: dict[str, float | int] = {
      "buffer_size": size,
      "buffer_capacity": self.config.capacity,
      "buffer_utilization": size / self.config.capacity,
      "buffer_wrong_count": n_wrong,
      "buffer_right_count": size - n_wrong,
      "buffer_wrong_ratio": n_wrong / denominator,
    }
    for turns, count in sorted(collections.Counter(e.num_route_turns for e in self._entries).items()):
      out[f"buffer_turns_{turns}_count"] = count
      out[f"buffer_turns_{turns}_pct"] = 100.0 * count / denominator
    out.update(
      {
        "buffer_fresh_count": len(fresh),
        "buffer_fresh_pct": 100.0 * len(fresh) / denominator,
        "buffer_unsampled_count": size - n_sampled,
        "buffer_available_count": sum(e.entry_id not in self._sampled_ids for e in fresh),
        "buffer_sampled_fraction": n_sampled / denominator,
        "buffer_unique_questions": len(per_question),
        "buffer_avg_per_question": size / len(per_question) if per_question else 0.0,
        "buffer_max_per_question": max(per_question.values(), default=0),
        "buffer_staleness_mean": float(np.mean(staleness)) if staleness else 0.0,
        "buffer_staleness_max": max(staleness, default=0),
        "buffer_step": self._step,
        "buffer_image_count": len(images),
        "buffer_image_mb": sum(img.nbytes for img in images.values()) / 1e6,
      }
    )
    for name in _COUNTER_NAMES:
      out[f"buffer_total_{name}"] = self._counters[name]
    return out

  # -- checkpointing --------------------------------------------------------------------------------

  def state_dict(self) -> dict[str, Any]:
    """Everything that determines future behaviour, as numpy arrays and ints (no strings, no
    zero-size arrays: orbax refuses both). Entry strings and distinct images are concatenated into
    flat uint8 arrays with per-item lengths/shapes (``image_index``: each entry's images, in order,
    as rows of ``image_shapes``); an empty buffer has ``entries == {}``."""
    state = {
      "version": _STATE_VERSION,
      "step": self._step,
      "next_entry_id": self._next_entry_id,
      "rng_state": _rng_to_words(self._rng),
      "counters": {name: self._counters[name] for name in _COUNTER_NAMES},
      "entries": {},
    }
    if not self._entries:
      return state
    strings, images, image_index, position = [], [], [], {}
    for e in self._entries:
      # The spec (the task's JSON dict) leads each entry's strings, so the string table is never empty.
      strings += [json.dumps(e.spec.to_dict(), sort_keys=True), e.prompt_text]
      for text, feedback in zip(e.assistant_texts, e.feedback_texts):
        strings += [text, feedback]
      strings.append(e.final_text)
      for img in e.images:  # pooled arrays: one object per distinct image; -1 for a text-only feedback turn
        if img is None:
          image_index.append(-1)
          continue
        if id(img) not in position:
          position[id(img)] = len(images)
          images.append(img)
        image_index.append(position[id(img)])
    encoded = [s.encode("utf-8") for s in strings]
    state["entries"] = {
      "entry_id": np.array([e.entry_id for e in self._entries], np.int32),
      "is_wrong": np.array([e.is_wrong for e in self._entries], bool),
      "num_route_turns": np.array([e.num_route_turns for e in self._entries], np.int32),
      "collection_step": np.array([e.collection_step for e in self._entries], np.int32),
      "sampled": np.array([e.entry_id in self._sampled_ids for e in self._entries], bool),
      "string_bytes": np.frombuffer(b"".join(encoded), np.uint8).copy(),
      "string_lengths": np.array([len(b) for b in encoded], np.int32),
      "image_bytes": np.concatenate([img.reshape(-1) for img in images]),
      "image_shapes": np.array([img.shape for img in images], np.int32),
      "image_index": np.array(image_index, np.int32),
    }
    return state

  def load_state_dict(self, state: Mapping[str, Any]) -> None:
    """Replaces the buffer's contents, step, counters and generator state with ``state``."""
    version = _as_int(state["version"], "version")
    if version not in (_STATE_VERSION, _V1):
      raise ValueError(f"prefix-buffer state version {version} is not supported (expected {_STATE_VERSION})")
    rng = np.random.Generator(np.random.PCG64())
    _words_to_rng(np.asarray(state["rng_state"]), rng)
    entries, sampled = _entries_from_state(state["entries"], self.task.parse_spec, version)
    pool = weakref.WeakValueDictionary()
    for img in {id(img): img for e in entries for img in e.images if img is not None}.values():
      pool[_image_key(img)] = img
    next_entry_id = _as_int(state["next_entry_id"], "next_entry_id")
    ids = [e.entry_id for e in entries]
    if ids != sorted(set(ids)) or (ids and ids[-1] >= next_entry_id):
      raise ValueError("prefix-buffer state entry ids must be increasing and below next_entry_id")
    if len(entries) > self.config.capacity:
      raise ValueError(f"prefix-buffer state holds {len(entries)} entries, above capacity {self.config.capacity}")
    per_question = collections.Counter(e.question_id for e in entries)
    if per_question and max(per_question.values()) > self.config.max_per_question:
      raise ValueError(
        f"prefix-buffer state holds {max(per_question.values())} entries for one question, "
        f"above max_per_question {self.config.max_per_question}"
      )
    counters = {name: _as_int(state["counters"][name], f"counters/{name}") for name in _COUNTER_NAMES}
    self._rng = rng
    self._entries = entries
    self._image_pool = pool
    self._sampled_ids = sampled
    self._next_entry_id = next_entry_id
    self._step = _as_int(state["step"], "step")
    self._counters = counters

  def save(self, path: str | os.PathLike) -> None:
    """Writes ``state_dict()`` to one compressed ``.npz`` (written aside, then renamed into place)."""
    path = pathlib.Path(path)
    if path.suffix != ".npz":
      raise ValueError(f"prefix-buffer save path must end in .npz, got {str(path)!r}")
    flat = {key: np.asarray(value) for key, value in _flatten(self.state_dict()).items()}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **flat)
    os.replace(tmp, path)

  def load(self, path: str | os.PathLike) -> None:
    """Restores a buffer written by ``save``."""
    with np.load(pathlib.Path(path), allow_pickle=False) as data:
      flat = {key: data[key] for key in data.files}
    self.load_state_dict(_unflatten(flat))


_COUNTER_NAMES = ("added", "evicted_question_cap", "evicted_capacity", "sampled")


def _question_victim(same_question: list[PrefixEntry], new_turns: int) -> PrefixEntry:
  """Upstream's choice when a question is full: the oldest entry with the new entry's turn count;
  if that count is new for the question, the oldest entry of its most common count. Ties between
  most common counts go to the count seen first, i.e. the one holding the question's oldest entry."""
  by_turns: dict[int, list[PrefixEntry]] = {}  # insertion-ordered by each count's oldest entry
  for e in same_question:  # oldest first
    by_turns.setdefault(e.num_route_turns, []).append(e)
  if new_turns in by_turns:
    return by_turns[new_turns][0]
  most = max(len(group) for group in by_turns.values())
  return next(group for group in by_turns.values() if len(group) == most)[0]


def _as_int(value: Any, name: str) -> int:
  arr = np.asarray(value)
  if arr.shape != () or not (np.issubdtype(arr.dtype, np.integer)) or isinstance(value, bool):
    raise ValueError(f"{name} must be an integer scalar, got {value!r}")
  return int(arr)


def _rng_to_words(rng: np.random.Generator) -> np.ndarray:
  """PCG64 state as 10 uint32 words (its 128-bit ints fit no numpy dtype; uint32 survives jax)."""
  state = rng.bit_generator.state
  if state["bit_generator"] != "PCG64":
    raise ValueError(f"expected a PCG64 generator, got {state['bit_generator']}")
  words = [
    (value >> (32 * k)) & 0xFFFFFFFF for value in (state["state"]["state"], state["state"]["inc"]) for k in range(4)
  ]
  return np.array(words + [state["has_uint32"], state["uinteger"]], np.uint32)


def _words_to_rng(words: np.ndarray, rng: np.random.Generator) -> None:
  if words.shape != (10,) or words.dtype != np.uint32:
    raise ValueError(f"rng_state must be 10 uint32 words, got dtype {words.dtype} shape {words.shape}")
  values = [int(w) for w in words]
  state_value = sum(values[k] << (32 * k) for k in range(4))
  inc = sum(values[4 + k] << (32 * k) for k in range(4))
  rng.bit_generator.state = {
    "bit_generator": "PCG64",
    "state": {"state": state_value, "inc": inc},
    "has_uint32": values[8],
    "uinteger": values[9],
  }


def _v1_spec(layout: str, start_pos: int, target_pos: int) -> dict:
  """A version-1 entry's FrozenLake map as the spec dict FrozenLake's ``parse_spec`` reads."""
  level = math.isqrt(len(layout))
  if level * level != len(layout):
    raise ValueError(f"prefix-buffer state has a non-square layout {layout!r}")
  rows = [layout[r * level : (r + 1) * level] for r in range(level)]
  return {"layout": rows, "start_pos": int(start_pos), "target_pos": int(target_pos)}


def _entries_from_state(state: Mapping[str, Any], parse_spec, version: int) -> tuple[list[PrefixEntry], set[int]]:
  if not state:
    return [], set()
  arrays = {key: np.asarray(value) for key, value in state.items()}
  n = len(arrays["entry_id"])
  columns = ("is_wrong", "num_route_turns", "collection_step", "sampled")
  for key in columns + (("start_pos", "target_pos") if version == _V1 else ()):
    if arrays[key].shape != (n,):
      raise ValueError(f"prefix-buffer state entries/{key} has shape {arrays[key].shape}, expected ({n},)")
  turns = arrays["num_route_turns"].astype(np.int64)
  if np.any(turns < 1):
    raise ValueError("prefix-buffer state has an entry with no route turn")
  string_lengths = arrays["string_lengths"].astype(np.int64)
  image_shapes = arrays["image_shapes"].astype(np.int64)
  image_index = arrays["image_index"].astype(np.int64)
  if len(string_lengths) != int(np.sum(3 + 2 * turns)) or len(image_index) != int(np.sum(1 + turns)):
    raise ValueError("prefix-buffer state string/image counts do not match the entries' route turns")
  if (
    image_shapes.ndim != 2
    or image_shapes.shape[1] != 3
    or np.any(image_index < -1)
    or np.any(image_index >= len(image_shapes))
  ):
    raise ValueError("prefix-buffer state image_index points outside its image table")
  string_bytes = arrays["string_bytes"].tobytes()
  image_bytes = arrays["image_bytes"]
  if len(string_bytes) != int(string_lengths.sum()) or image_bytes.size != int(np.prod(image_shapes, axis=1).sum()):
    raise ValueError("prefix-buffer state byte arrays do not match their recorded lengths/shapes")
  string_ends = np.cumsum(string_lengths)
  strings = [string_bytes[end - length : end].decode("utf-8") for end, length in zip(string_ends, string_lengths)]
  image_sizes = np.prod(image_shapes, axis=1)
  image_ends = np.cumsum(image_sizes)
  images = [
    _frozen_image(image_bytes[end - size : end].reshape(shape), "a stored image")
    for end, size, shape in zip(image_ends, image_sizes, image_shapes)
  ]
  entries, sampled, s, m = [], set(), 0, 0
  for i in range(n):
    t = int(turns[i])
    spec_json, prompt = strings[s], strings[s + 1]
    pairs = strings[s + 2 : s + 2 + 2 * t]
    final_text = strings[s + 2 + 2 * t]
    s += 3 + 2 * t
    if version == _V1:
      spec = parse_spec(_v1_spec(spec_json, arrays["start_pos"][i], arrays["target_pos"][i]))
    else:
      spec = parse_spec(json.loads(spec_json))
    entry_images = [None if k < 0 else images[k] for k in image_index[m : m + 1 + t]]
    m += 1 + t
    entry = PrefixEntry(
      spec=spec,
      prefix_type=WRONG if arrays["is_wrong"][i] else RIGHT,
      collection_step=int(arrays["collection_step"][i]),
      prompt_text=prompt,
      assistant_texts=tuple(pairs[0::2]),
      feedback_texts=tuple(pairs[1::2]),
      final_text=final_text,
      map_image=entry_images[0],
      feedback_images=tuple(entry_images[1:]),
      entry_id=int(arrays["entry_id"][i]),
    )
    entries.append(entry)
    if arrays["sampled"][i]:
      sampled.add(entry.entry_id)
  return entries, sampled


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested dicts to ``a/b`` keys; an empty dict is kept as a marker key so it round-trips."""
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      out.update(_flatten(value, name + "/") if value else {name + "/": np.zeros((), bool)})
    else:
      out[name] = value
  return out


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for key, value in flat.items():
    *parents, leaf = key.split("/")
    node = tree
    for part in parents:
      node = node.setdefault(part, {})
    if leaf:  # "" is the empty-dict marker
      node[leaf] = value
  return tree


def rollout_slice_metrics(
  is_buffer: Sequence[bool],
  buffer_types: Sequence[str | None],
  reward_metrics: Mapping[str, Sequence[float | None]],
  keys: Sequence[str] = (
    "em",
    "em_turn1",
    "em_final",
    "pr_turn1",
    "pr_final",
    "reflection",
    "n_turns",
    "outcome",
    "format",
  ),
) -> dict[str, float]:
  """Per-rollout reward metrics averaged over slices, as upstream's ``prefix_buffer_metrics``:
  ``prefix_buffer/{key}_{all,wrong,right}_{mean,count}`` over buffer rollouts (by their entry's
  type), ``non_prefix_buffer/{key}_{mean,count}`` and ``all/{key}_{mean,count}``. ``None`` values
  are skipped; an empty slice emits nothing."""
  n = len(is_buffer)
  if len(buffer_types) != n:
    raise ValueError(f"buffer_types has {len(buffer_types)} items for {n} rollouts")
  for i in range(n):
    if is_buffer[i] and buffer_types[i] not in PREFIX_TYPES:
      raise ValueError(f"buffer rollout {i} has prefix type {buffer_types[i]!r}, expected one of {PREFIX_TYPES}")
  out: dict[str, float] = {}

  def emit(name: str, values: list[float]):
    if values:
      out[f"{name}_mean"] = float(np.mean(values))
      out[f"{name}_count"] = len(values)

  for key in keys:
    if key not in reward_metrics:
      continue
    values = reward_metrics[key]
    if len(values) != n:
      raise ValueError(f"reward metric {key!r} has {len(values)} values for {n} rollouts")
    slices = {"buffer": [], WRONG: [], RIGHT: [], "non_buffer": [], "all": []}
    for i, value in enumerate(values):
      if value is None:
        continue
      value = float(value)
      slices["all"].append(value)
      if is_buffer[i]:
        slices["buffer"].append(value)
        slices[buffer_types[i]].append(value)
      else:
        slices["non_buffer"].append(value)
    emit(f"prefix_buffer/{key}_all", slices["buffer"])
    emit(f"prefix_buffer/{key}_wrong", slices[WRONG])
    emit(f"prefix_buffer/{key}_right", slices[RIGHT])
    emit(f"non_prefix_buffer/{key}", slices["non_buffer"])
    emit(f"all/{key}", slices["all"])
  return out
