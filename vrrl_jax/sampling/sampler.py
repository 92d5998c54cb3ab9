"""Batched multi-turn sampling for Qwen2.5-VL with a KV cache.

A generation batch lives on the device as one `KVCache` whose rows are samples. Three jitted programs move it:

  * append (prefill): a right-padded chunk of tokens (+ its images through the vision tower) is written at each
    row's own cache length, and the logits at each row's last real token are returned;
  * select_rows: gathers cache rows into a new batch / cache-length bucket (group fan-out: a prompt prefilled once
    is copied to its n samples; compaction: when the samples that go on fit a smaller batch bucket, the rows of
    finished episodes are dropped before the next turn; otherwise those rows stay in place, idle);
  * decode: a `lax.while_loop` inside one jit, the cache donated, that samples a token per row, writes it to the
    cache and computes the next logits (LM head on the one new position only), with per-row stop tokens, token
    budgets and M-RoPE positions. Rows that stopped are masked (no cache advance) until the whole batch is done.

M-RoPE positions are per row: the next token of row b sits at `next_positions[b]` (p_last + 1), decode token j at
`next_positions[b] + j`, and a continuation segment's positions are `get_rope_index` of the segment alone shifted by
the row's next position (text and image runs are laid out relative to the running position, so this equals
`get_rope_index` of the whole conversation). Host code keeps a mirror of each row's cache length and next position,
so choosing buckets never waits for the device.

Shapes are padded to `Buckets`; `Sampler.compile_log` records every distinct program. Under a mesh the batch is
split over the rules' batch axes, parameters and cache heads as the rules say (DECODE_RULES by default).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vrrl_jax.models import families
from vrrl_jax.models.kv_cache import KVCache
from vrrl_jax.models.inputs import ModelInputs
from vrrl_jax.parallel import host as host_lib
from vrrl_jax.parallel import mesh as mesh_lib
from vrrl_jax.parallel import rules as rules_lib
from vrrl_jax.sampling.buckets import Buckets, CompileLog

STOP = "stop"
LENGTH = "length"
NO_TOKEN = -1  # fills token buffers past a row's last generated token


# ---------------------------------------------------------------------------------------------------------------
# Sampling distributions.


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How tokens are drawn. Hashable: it is part of the decode program's static signature.

  temperature 0 is greedy. top_k 0 and top_p 1 switch those filters off. Filters apply in the order temperature,
  top-k, top-p (each on the result of the previous one), as transformers' logits warpers do. `stop_token_ids` end a
  row's turn (the stop token is kept as the row's last token); `suppressed_token_ids` are never drawn (e.g. the
  image pad token, which would corrupt the image-feature scatter of a later forward on the sequence).
  """

  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  max_new_tokens: int = 512
  stop_token_ids: tuple[int, ...] = ()
  suppressed_token_ids: tuple[int, ...] = ()

  def __post_init__(self):
    if not (isinstance(self.temperature, (int, float)) and self.temperature >= 0 and math.isfinite(self.temperature)):
      raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}")
    if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
    if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
      raise ValueError(f"top_k must be an int >= 0 (0 = off), got {self.top_k!r}")
    if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be a positive int, got {self.max_new_tokens!r}")
    for name in ("stop_token_ids", "suppressed_token_ids"):
      ids = tuple(getattr(self, name))
      if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ValueError(f"{name} must be non-negative token ids, got {ids!r}")
      object.__setattr__(self, name, tuple(int(i) for i in ids))
    if set(self.stop_token_ids) & set(self.suppressed_token_ids):
      raise ValueError(
        f"tokens {sorted(set(self.stop_token_ids) & set(self.suppressed_token_ids))} are both stop "
        "and suppressed tokens"
      )

  @property
  def greedy(self) -> bool:
    return self.temperature == 0


def sampling_scores(logits: jax.Array, config: SamplingConfig) -> jax.Array:
  """Scores [..., V] whose softmax is the distribution tokens are drawn from (-inf outside its support).

  Greedy: the logits with suppressed tokens removed (their softmax is the model's distribution, reported as the
  log-probs of greedy tokens). Otherwise logits / temperature, then top-k, then top-p (the smallest set of most
  likely tokens whose mass reaches top_p; tokens tied with the last one kept are kept too).
  """
  scores = logits.astype(jnp.float32)
  vocab = scores.shape[-1]
  if config.suppressed_token_ids:
    suppressed = np.zeros((vocab,), bool)
    suppressed[list(config.suppressed_token_ids)] = True
    scores = jnp.where(suppressed, -jnp.inf, scores)
  if config.greedy:
    return scores
  scores = scores / jnp.float32(config.temperature)
  use_top_k = 0 < config.top_k < vocab
  if use_top_k:
    top_values = jax.lax.top_k(scores, config.top_k)[0]  # sorted, descending
    scores = jnp.where(scores < top_values[..., -1:], -jnp.inf, scores)
  if config.top_p < 1:
    ranked = top_values if use_top_k else -jnp.sort(-scores, axis=-1)
    probs = jax.nn.softmax(ranked, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    threshold = jnp.min(jnp.where(mass_before < config.top_p, ranked, jnp.inf), axis=-1, keepdims=True)
    scores = jnp.where(scores < threshold, -jnp.inf, scores)
  return scores


def sampling_log_probs(logits: jax.Array, config: SamplingConfig) -> jax.Array:
  """log of the (truncated, renormalised) sampling distribution [..., V]."""
  return jax.nn.log_softmax(sampling_scores(logits, config), axis=-1)


def sample_tokens(logits: jax.Array, rng: jax.Array, config: SamplingConfig) -> tuple[jax.Array, jax.Array]:
  """Draws one token per row of logits [B, V]; returns tokens [B] int32 and their log-probs [B] under the sampling
  distribution (for greedy: under the model's distribution)."""
  scores = sampling_scores(logits, config)
  if config.greedy:
    tokens = jnp.argmax(scores, axis=-1)
  else:
    tokens = jax.random.categorical(rng, scores, axis=-1)
  tokens = tokens.astype(jnp.int32)
  log_probs = jnp.take_along_axis(jax.nn.log_softmax(scores, axis=-1), tokens[:, None], axis=-1)[:, 0]
  return tokens, log_probs


# ---------------------------------------------------------------------------------------------------------------
# Host-side data.


@dataclasses.dataclass(frozen=True)
class Segment:
  """Tokens [S] of a prompt or of a continuation, with the images its <|image_pad|> runs stand for."""

  input_ids: np.ndarray
  pixel_values: np.ndarray | None = None  # [patches, patch_dim]
  image_grid_thw: np.ndarray | None = None  # [images, 3]

  def __post_init__(self):
    ids = np.asarray(self.input_ids)
    if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
      raise ValueError(
        f"Segment.input_ids must be a non-empty 1-D integer array, got shape {ids.shape} dtype {ids.dtype}"
      )
    object.__setattr__(self, "input_ids", ids.astype(np.int32))
    grid = self.image_grid_thw
    if grid is not None and np.asarray(grid).size == 0:
      grid = None
    if (grid is None) != (self.pixel_values is None or np.asarray(self.pixel_values).size == 0):
      raise ValueError("Segment needs pixel_values and image_grid_thw together (or neither)")
    if grid is None:
      object.__setattr__(self, "pixel_values", None)
      object.__setattr__(self, "image_grid_thw", None)
    else:
      object.__setattr__(self, "pixel_values", np.asarray(self.pixel_values, np.float32))
      object.__setattr__(self, "image_grid_thw", np.asarray(grid, np.int64).reshape(-1, 3))

  @classmethod
  def from_encoding(cls, encoded: dict) -> Segment:
    """From ChatProcessor.encode (a batch of one, unpadded) or ChatProcessor.encode_segment output."""
    ids = np.asarray(encoded["input_ids"])
    if ids.ndim == 2:
      if ids.shape[0] != 1 or ("attention_mask" in encoded and not np.asarray(encoded["attention_mask"]).all()):
        raise ValueError(f"expected one unpadded conversation, got input_ids of shape {ids.shape}")
      ids = ids[0]
    return cls(ids, encoded.get("pixel_values"), encoded.get("image_grid_thw"))

  def __len__(self) -> int:
    return int(self.input_ids.shape[0])

  @property
  def num_patches(self) -> int:
    return 0 if self.pixel_values is None else int(self.pixel_values.shape[0])

  def extended(self, token_ids) -> Segment:
    """This segment followed by plain text tokens (e.g. a forced assistant opening)."""
    extra = np.asarray(token_ids, np.int32).reshape(-1)
    return Segment(np.concatenate([self.input_ids, extra]), self.pixel_values, self.image_grid_thw)


@dataclasses.dataclass
class GenerationState:
  """A generation batch: the device cache and host mirrors of what each row holds.

  Row r of the cache holds sample `sample_ids[r]` (-1: a padding row), `lengths[r]` cache slots, and its next
  token goes to M-RoPE position `next_positions[r]`. The cache is donated to the next call: use the state that
  call returns.
  """

  cache: KVCache
  sample_ids: np.ndarray
  lengths: np.ndarray
  next_positions: np.ndarray

  @property
  def active_samples(self) -> np.ndarray:
    return self.sample_ids[self.sample_ids >= 0]


@dataclasses.dataclass(frozen=True)
class TurnOutput:
  """One turn of every sample that was generated, in `sample_ids` order.

  tokens[i]: the generated tokens (the stop token included when one ended the turn); log_probs[i]: their log-probs
  under the sampling distribution; finish_reasons[i]: "stop" or "length" (the turn's token budget ran out);
  logits[i] [len(tokens[i]), V]: the logits each token was drawn from, when asked for.
  """

  sample_ids: np.ndarray
  tokens: list[np.ndarray]
  log_probs: list[np.ndarray]
  finish_reasons: list[str]
  logits: list[np.ndarray] | None = None


@flax.struct.dataclass
class _DecodeState:
  cache: KVCache
  logits: jax.Array  # [B, V] logits of each row's next token
  positions: jax.Array  # [B] M-RoPE position of the next token
  generating: jax.Array  # [B] bool
  stopped: jax.Array  # [B] bool: a stop token ended the row
  counts: jax.Array  # [B] tokens generated
  budget: jax.Array  # [B] most tokens this turn
  tokens: jax.Array  # [B, T]
  log_probs: jax.Array  # [B, T]
  recorded_logits: jax.Array | None  # [B, T, V] when recording
  rng: jax.Array
  step: jax.Array


# ---------------------------------------------------------------------------------------------------------------
# The sampler.


class Sampler:
  """Prefill / fan-out / decode / continuation for one model config (see the module docstring).

  `pad_token_id` fills padded chunk positions (masked; any id works). With a `mesh`, params must already be placed
  with `parallel.mesh.shard_params(..., rules)` for the same rules.
  """

  def __init__(
    self,
    config,
    *,
    pad_token_id: int = 0,
    mesh: Mesh | None = None,
    rules=rules_lib.DECODE_RULES,
    buckets: Buckets = Buckets(),
  ):
    self.config = config
    self.model = families.build(config)
    self.pad_token_id = int(pad_token_id)
    self.mesh = mesh
    self.rules = rules
    self.buckets = buckets
    self.compile_log = CompileLog("sampler")
    self.batch_multiple = 1
    if mesh is not None:
      batch_axes = nn.logical_to_mesh_axes(("activation_batch",), rules)[0]
      batch_axes = () if batch_axes is None else (batch_axes,) if isinstance(batch_axes, str) else batch_axes
      self.batch_multiple = math.prod(mesh.shape[a] for a in batch_axes)
      self._cache_sharding = mesh_lib.cache_shardings(mesh, rules)
      self._row_sharding = {ndim: mesh_lib.data_sharding(mesh, rules, ndim=ndim) for ndim in (1, 2, 3)}
      self._positions_sharding = mesh_lib.data_sharding(mesh, rules, ndim=3, batch_axis=1)
      self._replicated = NamedSharding(mesh, PartitionSpec())
    self._jitted = {}

  # -- public API --------------------------------------------------------------------------------------------

  def start(
    self,
    params,
    prompts: Sequence[Segment],
    sampling: SamplingConfig,
    rng: jax.Array,
    *,
    n_per_prompt: int = 1,
    max_new_tokens: Sequence[int] | None = None,
    record_logits: bool = False,
  ) -> tuple[GenerationState, TurnOutput]:
    """Prefills each prompt once, copies its cache rows to `n_per_prompt` samples and generates their first turn.

    Sample s is copy s % n of prompt s // n. `max_new_tokens` (one per sample) can lower the per-turn budget of
    `sampling` for single samples.
    """
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, Segment) for p in prompts):
      raise ValueError("start needs a non-empty list of Segments")
    if isinstance(n_per_prompt, bool) or not isinstance(n_per_prompt, int) or n_per_prompt < 1:
      raise ValueError(f"n_per_prompt must be a positive int, got {n_per_prompt!r}")
    num_samples = len(prompts) * n_per_prompt
    budgets = self._budgets(max_new_tokens, num_samples, sampling)
    prompt_lengths = np.repeat([len(p) for p in prompts], n_per_prompt)
    max_len = self.buckets.cache(int(np.max(prompt_lengths + budgets)))
    prompt_batch = self.buckets.batch(len(prompts), self.batch_multiple)
    batch = self.buckets.batch(num_samples, self.batch_multiple)
    with self._context():
      self.compile_log.record("init", (prompt_batch, max_len))
      cache = self._init_fn(prompt_batch, max_len)()
      cache, logits, next_positions = self._append_segments(
        params, cache, _padded(prompts, prompt_batch), np.zeros(prompt_batch, np.int64)
      )
      if n_per_prompt > 1 or batch != prompt_batch:
        rows = _padded(np.arange(num_samples) // n_per_prompt, batch, -1)
        cache, logits = self._call(
          "select_rows",
          (prompt_batch, batch, max_len, max_len, True),
          self._select_fn(max_len, donate=batch == prompt_batch),
          cache,
          logits,
          self._put_rows(rows.astype(np.int32)),
        )
        next_positions = next_positions[np.maximum(rows, 0)]
      return self._decode_turn(
        params,
        cache,
        logits,
        _padded(np.arange(num_samples), batch, -1),
        _padded(prompt_lengths, batch, 0),
        next_positions,
        _padded(budgets, batch, 0),
        sampling,
        rng,
        record_logits,
      )

  def extend(
    self,
    params,
    state: GenerationState,
    sample_ids: Sequence[int],
    segments: Sequence[Segment],
    sampling: SamplingConfig,
    rng: jax.Array,
    *,
    max_new_tokens: Sequence[int] | None = None,
    record_logits: bool = False,
  ) -> tuple[GenerationState, TurnOutput]:
    """Appends `segments[i]` to the cached conversation of `sample_ids[i]` and generates the next turn.

    The segment's tokens continue the row's cache and M-RoPE positions; images go through the vision tower.
    Samples of `state` not listed are finished: while the batch bucket stays the same their rows stay in place,
    idle (no token, no compute beyond the batch's); when the listed samples fit a smaller bucket (or need a longer
    cache), the listed rows are first gathered into a new cache of that shape.
    """
    sample_ids = np.asarray(list(sample_ids), np.int64)
    segments = list(segments)
    if len(segments) != len(sample_ids) or not len(segments):
      raise ValueError(
        f"extend needs one segment per sample and at least one; got {len(sample_ids)} samples "
        f"and {len(segments)} segments"
      )
    if not all(isinstance(s, Segment) for s in segments):
      raise ValueError("segments must be Segments")
    if len(set(sample_ids.tolist())) != len(sample_ids):
      raise ValueError(f"sample_ids repeat: {sample_ids.tolist()}")
    old_rows = _rows_of(state, sample_ids)
    budgets = self._budgets(max_new_tokens, len(sample_ids), sampling)
    segment_lengths = np.array([len(s) for s in segments])
    needed = int(np.max(state.lengths[old_rows] + segment_lengths + budgets))
    batch = self.buckets.batch(len(sample_ids), self.batch_multiple)
    old_batch, old_len = state.cache.key.shape[1], state.cache.max_len

    with self._context():
      if batch == old_batch and needed <= old_len:  # in place: finished rows idle
        cache, rows = state.cache, old_rows
        row_segments = [None] * batch
        for row, segment in zip(rows, segments):
          row_segments[row] = segment
        row_samples = np.full((batch,), -1, np.int64)
        row_samples[rows] = sample_ids
        lengths, start_positions = state.lengths.copy(), state.next_positions.copy()
      else:  # gather the continuing rows into a new bucket
        max_len = self.buckets.cache(needed)
        select_rows = _padded(old_rows, batch, -1).astype(np.int32)
        cache, _ = self._call(
          "select_rows",
          (old_batch, batch, old_len, max_len, False),
          self._select_fn(max_len, donate=(old_batch, old_len) == (batch, max_len)),
          state.cache,
          None,
          self._put_rows(select_rows),
        )
        rows = np.arange(len(sample_ids))
        row_segments = _padded(segments, batch)
        row_samples = _padded(sample_ids, batch, -1)
        lengths = _padded(state.lengths[old_rows], batch, 0)
        start_positions = _padded(state.next_positions[old_rows], batch, 0)
      lengths[rows] += segment_lengths
      row_budgets = np.zeros((batch,), np.int64)
      row_budgets[rows] = budgets
      cache, logits, next_positions = self._append_segments(params, cache, row_segments, start_positions)
      return self._decode_turn(
        params, cache, logits, row_samples, lengths, next_positions, row_budgets, sampling, rng, record_logits
      )

  def rewind(self, state: GenerationState, sample_ids: Sequence[int], num_tokens: Sequence[int]) -> GenerationState:
    """Drops the last ``num_tokens[i]`` generated tokens cached for ``sample_ids[i]`` (a turn cut short after its
    text matched a stop string): the row's length and next M-RoPE position move back by that many (each generated
    token took one of each) and the slots are masked, so the next ``extend`` writes over them."""
    sample_ids = np.asarray(list(sample_ids), np.int64)
    drops = np.asarray(list(num_tokens), np.int64)
    if drops.shape != sample_ids.shape:
      raise ValueError(f"rewind needs one token count per sample; got {len(sample_ids)} samples, {len(drops)} counts")
    rows = _rows_of(state, sample_ids)
    if (drops < 0).any() or (drops > state.lengths[rows]).any():
      raise ValueError(f"token counts to drop must be in [0, the row's length], got {drops.tolist()}")
    if not drops.any():
      return state
    lengths, positions = state.lengths.copy(), state.next_positions.copy()
    lengths[rows] -= drops
    positions[rows] -= drops
    batch, max_len = state.cache.key.shape[1], state.cache.max_len
    with self._context():
      cache = self._call(
        "rewind", (batch, max_len), self._rewind_fn(), state.cache, self._put_rows(lengths.astype(np.int32))
      )
    return GenerationState(cache=cache, sample_ids=state.sample_ids, lengths=lengths, next_positions=positions)

  # -- host-side preparation ---------------------------------------------------------------------------------

  def _budgets(self, max_new_tokens, num_samples: int, sampling: SamplingConfig) -> np.ndarray:
    if max_new_tokens is None:
      return np.full((num_samples,), sampling.max_new_tokens, np.int64)
    budgets = np.asarray(list(max_new_tokens), np.int64)
    if budgets.shape != (num_samples,):
      raise ValueError(f"max_new_tokens needs one budget per sample ({num_samples}), got {budgets.shape}")
    if (budgets < 0).any() or (budgets > sampling.max_new_tokens).any():
      raise ValueError(
        f"per-sample budgets must be in [0, sampling.max_new_tokens={sampling.max_new_tokens}], got {budgets.tolist()}"
      )
    return budgets

  def _prefill_groups(self, row_segments: list[Segment | None]) -> list[list[int]]:
    """Rows with a segment, cut into consecutive groups whose images fit the per-call patch budget (a row over
    budget is a group of its own)."""
    budget = self.buckets.max_prefill_patches
    groups, current, patches = [], [], 0
    for row, segment in enumerate(row_segments):
      if segment is None:
        continue
      if current and budget is not None and patches + segment.num_patches > budget:
        groups.append(current)
        current, patches = [], 0
      current.append(row)
      patches += segment.num_patches
    groups.append(current)
    return groups

  def _append_segments(self, params, cache: KVCache, row_segments: list[Segment | None], start_positions: np.ndarray):
    """Writes row_segments[r] into cache row r after what the row holds (None: nothing), starting at M-RoPE
    position start_positions[r]. Returns the cache, the logits [B, V] at each row's last new token and each row's
    next position [B]."""
    batch, max_len = cache.key.shape[1], cache.max_len
    groups = self._prefill_groups(row_segments)
    next_positions = np.asarray(start_positions, np.int64).copy()
    if len(groups) == 1:  # one call over the whole batch, in cache row order
      inputs, group_next, last_index = self._chunk_inputs(row_segments, start_positions)
      next_positions[groups[0]] = group_next[groups[0]]
      key = (batch, "all rows", inputs.input_ids.shape[1], max_len, _patch_count(inputs))
      cache, logits = self._call(
        "append",
        key,
        self._append_fn(True),
        params,
        cache,
        None,
        None,
        self._put_inputs(inputs),
        self._put_rows(last_index),
      )
      return cache, logits, next_positions
    self.compile_log.record("fresh_logits", (batch,))
    logits = self._logits_fn(batch)()
    for group in groups:  # row subsets, gathered from and written back to the cache
      group_batch = self.buckets.batch(len(group), self.batch_multiple)
      rows = _padded(np.asarray(group), group_batch, batch)  # out of range: padding rows are dropped on write-back
      inputs, group_next, last_index = self._chunk_inputs(
        _padded([row_segments[r] for r in group], group_batch), next_positions[np.minimum(rows, batch - 1)]
      )
      next_positions[group] = group_next[: len(group)]
      key = (batch, group_batch, inputs.input_ids.shape[1], max_len, _patch_count(inputs))
      cache, logits = self._call(
        "append",
        key,
        self._append_fn(False),
        params,
        cache,
        logits,
        self._put_rows(rows.astype(np.int32)),
        self._put_inputs(inputs),
        self._put_rows(last_index),
      )
    return cache, logits, next_positions

  def _chunk_inputs(self, row_segments: list[Segment | None], start_positions: np.ndarray):
    """Right-padded ModelInputs [rows, S bucket] (a None row is all padding), positions shifted to each row's start
    position. Returns the inputs, each row's next position after its segment, and each row's last token index."""
    batch = len(row_segments)
    lengths = np.array([0 if s is None else len(s) for s in row_segments])
    chunk = self.buckets.chunk(int(lengths.max()))
    ids = np.full((batch, chunk), self.pad_token_id, np.int32)
    mask = np.zeros((batch, chunk), np.int32)
    for r, segment in enumerate(row_segments):
      if segment is not None:
        ids[r, : len(segment)] = segment.input_ids
        mask[r, : len(segment)] = 1
    with_images = [s for s in row_segments if s is not None and s.image_grid_thw is not None]
    pixel_values = image_grid_thw = None
    patch_multiple = self.config.vision.merge_unit
    if with_images:
      pixel_values = np.concatenate([s.pixel_values for s in with_images])
      image_grid_thw = np.concatenate([s.image_grid_thw for s in with_images])
      patch_multiple = self.buckets.patches(pixel_values.shape[0], self.config.vision.merge_unit, batch)
    inputs, _ = families.prepare_inputs(
      self.config, ids, mask, pixel_values, image_grid_thw, patch_multiple=patch_multiple
    )
    start = np.asarray(start_positions, np.int64)
    positions = np.where(mask[None] > 0, inputs.positions + start[None, :, None], 0).astype(np.int32)
    # get_rope_index lays a segment out from 0, so its last position + 1 is how far the row's next position moves.
    next_positions = np.where(lengths > 0, start + inputs.positions.max(axis=(0, 2)) + 1, start)
    last_index = np.maximum(lengths - 1, 0).astype(np.int32)
    return inputs.replace(positions=positions), next_positions, last_index

  # -- device calls ------------------------------------------------------------------------------------------

  def _decode_turn(
    self, params, cache, logits, row_samples, lengths, positions, row_budgets, sampling, rng, record_logits
  ) -> tuple[GenerationState, TurnOutput]:
    """Decodes one turn for the rows with a sample and a budget; returns the new state and the turn output."""
    batch = len(row_samples)
    key = (batch, cache.max_len, sampling, record_logits)
    cache, tokens, log_probs, counts, stopped, recorded = self._call(
      "decode",
      key,
      self._decode_fn(sampling, record_logits),
      params,
      cache,
      logits,
      self._put_rows(np.asarray(positions, np.int32)),
      self._put_rows(np.asarray(row_budgets, np.int32)),
      self._put_replicated(rng),
    )
    tokens, log_probs, counts, stopped = host_lib.tree_to_host((tokens, log_probs, counts, stopped))
    if record_logits:
      recorded = host_lib.to_host(recorded)
    rows = np.flatnonzero(row_samples >= 0)
    output = TurnOutput(
      sample_ids=row_samples[rows].copy(),
      tokens=[tokens[r, : counts[r]].copy() for r in rows],
      log_probs=[log_probs[r, : counts[r]].copy() for r in rows],
      finish_reasons=[STOP if stopped[r] else LENGTH for r in rows],
      logits=[recorded[r, : counts[r]].copy() for r in rows] if record_logits else None,
    )
    state = GenerationState(
      cache=cache,
      sample_ids=np.asarray(row_samples, np.int64),
      lengths=np.asarray(lengths, np.int64) + counts,
      next_positions=np.asarray(positions, np.int64) + counts,
    )
    return state, output

  def _call(self, name: str, key: tuple, fn, *args):
    self.compile_log.record(name, key)
    return fn(*args)

  @contextlib.contextmanager
  def _context(self):
    if self.mesh is None:
      yield
      return
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield

  def _put_rows(self, array: np.ndarray):
    if self.mesh is None:
      return jnp.asarray(array)
    return host_lib.to_global(array, self._row_sharding[array.ndim])

  def _put_replicated(self, value):
    if self.mesh is None:
      return value
    return host_lib.tree_to_global(value, self._replicated)

  def _put_inputs(self, inputs: ModelInputs) -> ModelInputs:
    if self.mesh is None:
      return jax.tree.map(jnp.asarray, inputs)
    return ModelInputs(
      input_ids=host_lib.to_global(inputs.input_ids, self._row_sharding[2]),
      segment_ids=host_lib.to_global(inputs.segment_ids, self._row_sharding[2]),
      positions=host_lib.to_global(inputs.positions, self._positions_sharding),
      vision=host_lib.tree_to_global(inputs.vision, self._replicated),
    )

  def _constrain_rows(self, array: jax.Array) -> jax.Array:
    if self.mesh is None:
      return array
    return jax.lax.with_sharding_constraint(array, self._row_sharding[array.ndim])

  def _constrain_cache(self, cache: KVCache) -> KVCache:
    if self.mesh is None:
      return cache
    return jax.lax.with_sharding_constraint(cache, self._cache_sharding)

  # -- jitted programs ---------------------------------------------------------------------------------------

  def _memo(self, key, build):
    if key not in self._jitted:
      self._jitted[key] = build()
    return self._jitted[key]

  def _hidden_and_cache(self, params, inputs: ModelInputs, cache: KVCache):
    out = self.model.apply({"params": params}, inputs, cache, return_logits=False, method="forward")
    return out.logits, self._constrain_cache(out.cache)

  def _lm_logits(self, params, hidden):
    return self.model.apply({"params": params}, hidden, method="lm_logits")

  def _append(self, whole: bool, params, cache: KVCache, logits, rows, inputs: ModelInputs, last_index):
    """Appends a chunk to the cache and returns the logits at each chunk row's last token: `whole`, the chunk's rows
    are the cache rows (logits and rows unused); otherwise to cache rows `rows` (out of range: dropped), whose
    logits go to logits[rows]."""
    if whole:
      hidden, cache = self._hidden_and_cache(params, inputs, cache)
    else:
      batch = cache.key.shape[1]
      index = jnp.minimum(rows, batch - 1)
      part = KVCache(
        key=jnp.take(cache.key, index, axis=1),
        value=jnp.take(cache.value, index, axis=1),
        segment_ids=jnp.take(cache.segment_ids, index, axis=0),
        lengths=jnp.take(cache.lengths, index, axis=0),
      )
      hidden, part = self._hidden_and_cache(params, inputs, part)
      cache = self._constrain_cache(
        KVCache(
          key=cache.key.at[:, rows].set(part.key, mode="drop"),
          value=cache.value.at[:, rows].set(part.value, mode="drop"),
          segment_ids=cache.segment_ids.at[rows].set(part.segment_ids, mode="drop"),
          lengths=cache.lengths.at[rows].set(part.lengths, mode="drop"),
        )
      )
    last = jnp.take_along_axis(hidden, last_index[:, None, None].astype(jnp.int32), axis=1)[:, 0]
    new_logits = self._lm_logits(params, last)
    if whole:
      return cache, self._constrain_rows(new_logits)
    return cache, logits.at[rows].set(new_logits, mode="drop")

  def _append_fn(self, whole: bool):
    donate = (1,) if whole else (1, 2)
    return self._memo(("append", whole), lambda: jax.jit(functools.partial(self._append, whole), donate_argnums=donate))

  def _init_fn(self, batch: int, max_len: int):
    init = lambda: self._constrain_cache(families.init_cache(self.config, batch, max_len))
    return self._memo(("init", batch, max_len), lambda: jax.jit(init))

  def _logits_fn(self, batch: int):
    init = lambda: self._constrain_rows(jnp.zeros((batch, self.config.text.vocab_size), jnp.float32))
    return self._memo(("logits", batch), lambda: jax.jit(init))

  def _rewind_fn(self):
    def rewind(cache: KVCache, lengths):
      kept = jnp.arange(cache.max_len, dtype=jnp.int32)[None, :] < lengths[:, None]
      return self._constrain_cache(cache.replace(segment_ids=jnp.where(kept, cache.segment_ids, 0), lengths=lengths))

    return self._memo(("rewind",), lambda: jax.jit(rewind, donate_argnums=(0,)))

  def _select_fn(self, max_len: int, donate: bool):
    def select(cache: KVCache, logits, rows):
      valid = rows >= 0
      index = jnp.maximum(rows, 0)
      key = jnp.take(cache.key, index, axis=1)
      value = jnp.take(cache.value, index, axis=1)
      segment_ids = jnp.where(valid[:, None], jnp.take(cache.segment_ids, index, axis=0), 0)
      lengths = jnp.where(valid, jnp.take(cache.lengths, index, axis=0), 0)
      old_len = cache.max_len
      if max_len > old_len:
        pad = [(0, 0)] * key.ndim
        pad[2] = (0, max_len - old_len)
        key, value = jnp.pad(key, pad), jnp.pad(value, pad)
        segment_ids = jnp.pad(segment_ids, ((0, 0), (0, max_len - old_len)))
      elif max_len < old_len:
        key, value, segment_ids = key[:, :, :max_len], value[:, :, :max_len], segment_ids[:, :max_len]
      cache = self._constrain_cache(KVCache(key=key, value=value, segment_ids=segment_ids, lengths=lengths))
      if logits is not None:
        logits = jnp.take(logits, index, axis=0)
      return cache, logits

    # Donating the old cache only helps when the new one has its shape (otherwise jax warns it was unusable).
    return self._memo(("select", max_len, donate), lambda: jax.jit(select, donate_argnums=(0,) if donate else ()))

  def _decode_fn(self, sampling: SamplingConfig, record_logits: bool):
    return self._memo(
      ("decode", sampling, record_logits),
      lambda: jax.jit(functools.partial(self._decode, sampling, record_logits), donate_argnums=(1,)),
    )

  def _decode(
    self, sampling: SamplingConfig, record_logits: bool, params, cache: KVCache, logits, positions, budget, rng
  ):
    """Samples up to sampling.max_new_tokens tokens per row; every sampled token is written to the cache."""
    batch = positions.shape[0]
    steps = sampling.max_new_tokens
    vocab = logits.shape[-1]
    stop_ids = sampling.stop_token_ids

    def cond(state: _DecodeState):
      return (state.step < steps) & jnp.any(state.generating)

    def body(state: _DecodeState) -> _DecodeState:
      rng, step_rng = jax.random.split(state.rng)
      generating = state.generating
      tokens, log_probs = sample_tokens(state.logits, step_rng, sampling)
      tokens = jnp.where(generating, tokens, NO_TOKEN)
      log_probs = jnp.where(generating, log_probs, 0.0)
      counts = state.counts + generating.astype(jnp.int32)
      hit_stop = jnp.zeros_like(generating)
      for stop_id in stop_ids:
        hit_stop |= tokens == stop_id
      hit_stop &= generating
      column = (0, state.step)
      token_buffer = jax.lax.dynamic_update_slice(state.tokens, tokens[:, None], column)
      log_prob_buffer = jax.lax.dynamic_update_slice(state.log_probs, log_probs[:, None], column)
      recorded = state.recorded_logits
      if record_logits:
        recorded = jax.lax.dynamic_update_slice(recorded, state.logits[:, None], (0, state.step, 0))
      # Write the sampled tokens (the last one too: a later turn continues after it) and get the next logits.
      step_inputs = ModelInputs(
        input_ids=jnp.maximum(tokens, 0)[:, None],
        segment_ids=generating.astype(jnp.int32)[:, None],
        positions=jnp.broadcast_to(state.positions[None, :, None], (3, batch, 1)),
      )
      hidden, cache = self._hidden_and_cache(params, step_inputs, state.cache)
      next_logits = self._lm_logits(params, hidden[:, 0])
      return _DecodeState(
        cache=cache,
        logits=next_logits,
        positions=state.positions + generating.astype(jnp.int32),
        generating=generating & ~hit_stop & (counts < state.budget),
        stopped=state.stopped | hit_stop,
        counts=counts,
        budget=state.budget,
        tokens=token_buffer,
        log_probs=log_prob_buffer,
        recorded_logits=recorded,
        rng=rng,
        step=state.step + 1,
      )

    state = _DecodeState(
      cache=cache,
      logits=logits.astype(jnp.float32),
      positions=positions.astype(jnp.int32),
      generating=budget > 0,
      stopped=jnp.zeros((batch,), bool),
      counts=jnp.zeros((batch,), jnp.int32),
      budget=budget.astype(jnp.int32),
      tokens=jnp.full((batch, steps), NO_TOKEN, jnp.int32),
      log_probs=jnp.zeros((batch, steps), jnp.float32),
      recorded_logits=jnp.zeros((batch, steps, vocab), jnp.float32) if record_logits else None,
      rng=rng,
      step=jnp.zeros((), jnp.int32),
    )
    state = jax.lax.while_loop(cond, body, state)
    return state.cache, state.tokens, state.log_probs, state.counts, state.stopped, state.recorded_logits


def _rows_of(state: GenerationState, sample_ids: np.ndarray) -> np.ndarray:
  """The cache row of each sample; a clear error for samples the state does not hold."""
  row_of = {int(s): r for r, s in enumerate(state.sample_ids) if s >= 0}
  missing = [int(s) for s in sample_ids if int(s) not in row_of]
  if missing:
    raise ValueError(f"samples {missing} are not in this generation state (their episodes ended or never began)")
  return np.array([row_of[int(s)] for s in sample_ids], np.int64)


def _padded(values, length: int, fill=None):
  """values followed by `fill` up to `length` (a list for lists, an array for arrays)."""
  if isinstance(values, list):
    return values + [fill] * (length - len(values))
  values = np.asarray(values)
  return np.concatenate([values, np.full((length - len(values),), fill, values.dtype)])


def _patch_count(inputs: ModelInputs) -> int:
  return 0 if inputs.vision is None else int(inputs.vision.pixel_values.shape[0])
