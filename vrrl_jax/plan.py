r"""Will a config fit a TPU slice, and how long is an RL step at best? Answered on a laptop, before renting one.

  python -m vrrl_jax.plan --config configs/frozenlake_qwen25vl_3b_v5e_8.py --topology v5e-8
  python -m vrrl_jax.plan --config configs/X.py --topology v5p-16 --config.rl.micro_batches=16 --json

Per-device bytes of each thing an RL step keeps in HBM, split over the mesh the way the code splits it:

- params, the frozen reference copy (``rl.loss.kl_coef > 0``) and the optimizer state (optax adamw: mu and nu in
  the params' dtype, ``train_state.make_optimizer``), from the model's exact param shapes (``families.abstract_params``)
  and logical axis names under ``rules.DEFAULT_RULES``: split over fsdp x tensor, a dimension whose mesh axes do not
  divide it is an error here as in ``mesh.shard_params``;
- the update (``rl.step.update_step``): float32 gradient sums plus one micro-batch's gradients, the micro-batched
  batch (rows over data x fsdp, images replicated, as ``rl_batch_shardings``), activations of one micro-batch with
  and without remat, one LM-head chunk, the optimizer's update tree;
- the log-prob passes (forward only) and the rollout: the KV cache (sampler batch and cache-length buckets,
  ``layers x rows x length x kv heads x head dim x 2`` in the compute dtype, rows over data x fsdp, kv heads over
  tensor), the copy made when a turn grows the cache bucket, the attention scores of appending one segment (a prompt
  or a feedback turn with its image) against the whole cache, and the decode step's logits.

Activations are a documented estimate, calibrated on XLA's own count for a small model on CPU (tests/test_plan.py
checks the totals within 20%; measured 1-10%): a decoder layer keeps, per token, ``5 D + 3 (q + kv) + 4 I`` values
(the last two split over tensor: its input, norms, q/k/v before and after rotary, attention output, residual, MLP
gate/up/activation/product; vision blocks alike). Remat (``nothing_saveable``) keeps only each layer's input
(``layers x tokens x D``) and, in the backward of one layer, about 1.5x that layer's values (forward values plus
their cotangents); without remat about 1.8x for every layer (1.6x unrolled). The blocked attention
(``models/attention.py``) is a scan whose backward keeps every tile's logits and probabilities in float32, 12 bytes
per (query, key, head) for the one rematerialised layer, 17 (11 unrolled) per layer without remat: quadratic in the
sequence (``attention_backward_bytes``). The vision tower's inputs are replicated (every device encodes the whole
micro-batch's patches, and the update batch holds every micro-batch's pixels on every device) and its frame
attention is a dense band of 3 x max_frame_patches keys per patch (``attention.local_attention``), so image size,
not the text, decides most VRRL configs.

Time: a roofline lower bound per RL step phase at the slice's peak bf16 FLOP/s (prefill, log-probs, update: 2 x
params x tokens per forward, x3 with the backward, +1 forward under remat, plus attention; the vision tower's share
split over tensor only, as its inputs are replicated) and HBM bandwidth (decode: every token step reads the params
each device multiplies with and its KV cache). A full row is the prompt, then turns of max_new_tokens sampled tokens
each followed by a feedback segment; turns are sequential, so decode runs turns x max_new_tokens steps.

Assumptions the config does not say (flags): every row is ``--seq-len`` tokens (default max_sequence_len: the worst
case); a row holds the map image and one feedback image per turn, each as large as the largest training render
(``image_tokens``) shrunk to ``image.max_pixels``, together at most ``--image-fraction`` of the row; a rollout
appends segments of ``--prefill-len`` tokens (default one image and 512 tokens of text).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
from typing import Any

GiB = 2**30
GB = 10**9

# Per-chip figures, each from its generation's Cloud TPU system architecture page. One JAX device per chip (v4 and
# v5p chips have 2 TensorCores run as one device). "GB" and "GiB" as the page says them.


@dataclasses.dataclass(frozen=True)
class Chip:
  hbm_bytes: int
  peak_bf16_flops: float  # FLOP/s
  hbm_bytes_per_s: float
  chips_per_host: int  # the physical host; multi-host v5e / v6e slices use 4-chip TPU VMs (vrrl_jax/launch.py)
  source: str


CHIPS = {
  # "Peak compute per chip 275 teraflops (bf16 or int8)"; "HBM2 capacity and bandwidth 32 GiB, 1200 GBps";
  # v4-8 = 4 chips on one host.
  "v4": Chip(32 * GiB, 275e12, 1200e9, 4, "https://cloud.google.com/tpu/docs/v4"),
  # "Peak compute per chip (bf16) 197 TFLOPs"; "HBM2 capacity and bandwidth 16 GB, 819 GBps" (a newer revision of
  # the page says "800 GiBps", 859 GB/s); "Chips per host 8".
  "v5e": Chip(16 * GB, 197e12, 819e9, 8, "https://cloud.google.com/tpu/docs/v5e"),
  # "Peak compute per chip (BF16) 459 TFLOPs", "HBM capacity per chip 95 GiB", "HBM bandwidth per chip 2765 GBps";
  # 4-chip VMs (2x2x1 = 4 chips = 1 host).
  "v5p": Chip(95 * GiB, 459e12, 2765e9, 4, "https://cloud.google.com/tpu/docs/v5p"),
  # "Peak compute per chip (bf16) 918 TFLOPs", "HBM capacity per chip 32 GB", "HBM bandwidth per chip 1638 GBps",
  # "Chips per host 8".
  "v6e": Chip(32 * GB, 918e12, 1638e9, 8, "https://cloud.google.com/tpu/docs/v6e"),
}

# Calibration of the activation estimate (module docstring): XLA's temp bytes for the tiny model's update on the
# 8-device CPU mesh at 512..2048 tokens (tests/test_plan.py checks the resulting totals within 20%).
REMAT_WORKING = 1.5  # one layer's values and their cotangents, in that layer's backward
NO_REMAT_KEPT = {
  True: 1.8,
  False: 1.6,
}  # values kept per layer without remat, by scan_layers (unrolled: XLA fuses more)


def attention_backward_bytes(remat: bool, scan_layers: bool, band: bool) -> int:
  """Bytes per (query, key, head) an attention keeps for its backward (float32 logits, probabilities, masked
  logits): the one rematerialised layer's blocked attention (a scan over tiles) 12; a dense band
  (``local_attention``, the vision tower) under remat 17 (scanned blocks pick window or frame attention with a
  traced cond, whose backward keeps both); every layer's without remat 17 when scanned, 11 unrolled. Measured as
  the slope of XLA's temp bytes over tokens squared / band width on the CPU mesh."""
  if remat:
    return 17 if band else 12
  return 17 if scan_layers else 11


ATTENTION_FORWARD_BYTES = 8  # dense forward attention (prefill, local bands): fp32 logits and probabilities
ATTENTION_BLOCK = 256  # attention.self_attention's default block
LOGPROB_CHUNK = 128  # StepConfig.logprob_chunk_size
CACHE_GROWTH_COPY = 0.75  # the previous cache bucket, alive while select_rows copies it into the next (<= 3/4)
REMAT_POLICIES = ("nothing_saveable",)  # policies that keep only each layer's input


class PlanError(ValueError):
  """A config or topology the planner cannot read; the message names it."""


# ----------------------------------------------------------------------------------------------------------------
# Config and model.


def load_config(path: str, overrides: list[str]):
  """``experiment.load_config`` with its overrides; a bad override is a PlanError."""
  from vrrl_jax import experiment

  try:
    return experiment.load_config(path, overrides)
  except ValueError as e:
    raise PlanError(str(e)) from None


def _needs_token_ids(model: Any) -> bool:
  model = dict(model)
  ids = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
  return dict(model.get("text_config") or {}).get("vocab_size") is None or any(model.get(k) is None for k in ids)


def model_config_of(config):
  """The model config the run would build (``experiment.model_config_from`` and ``build``'s max_frame_patches), from
  ``config.model`` when ``init_checkpoint`` is not a local directory (e.g. a path on the TPU VMs' bucket mount)."""
  from vrrl_jax import experiment
  from vrrl_jax.data import tokenizer as tokenizer_lib

  config = config.copy_and_resolve_references()
  checkpoint = config.get("init_checkpoint")
  if checkpoint and not pathlib.Path(str(checkpoint)).is_dir():
    if config.get("model") is None:
      raise PlanError(
        f"init_checkpoint {checkpoint} is not a local directory and config.model is unset, so nothing gives the "
        "model's shape; plan a config with a model dict (configs/*_v5e_8.py) or a local checkpoint"
      )
    config.init_checkpoint = None
  elif not checkpoint and config.get("model") is None:
    raise PlanError(
      "config has neither model nor init_checkpoint; set --config.init_checkpoint=<local checkpoint dir> or plan a "
      "config with a model dict (configs/*_v5e_8.py)"
    )
  token_ids = None
  if config.get("model") is not None and _needs_token_ids(config.model):
    token_ids = tokenizer_lib.special_token_ids(experiment.load_tokenizer(config))
  model_config = experiment.model_config_from(config, token_ids)
  options = dict(config.model_options)
  if model_config.max_frame_patches is None and "max_frame_patches" not in options:
    image = experiment.image_config_from(config)
    model_config = dataclasses.replace(model_config, max_frame_patches=image.max_pixels // image.patch_size**2)
  return model_config


def resolve_mesh(mesh_config, num_devices: int) -> dict[str, int]:
  """Mesh sizes {"data", "fsdp", "tensor"} on ``num_devices`` (one size may be -1), as ``mesh.make_mesh``."""
  from vrrl_jax.parallel.mesh import MESH_AXES

  mesh_config = dict(mesh_config)
  unknown = set(mesh_config) - set(MESH_AXES)
  if unknown:
    raise PlanError(f"unknown mesh axes {sorted(unknown)}; expected {MESH_AXES}")
  sizes = {axis: int(mesh_config.get(axis, 1)) for axis in MESH_AXES}
  free = [axis for axis, size in sizes.items() if size == -1]
  if len(free) > 1 or any(size == 0 or size < -1 for size in sizes.values()):
    raise PlanError(f"mesh sizes must be positive with at most one -1, got {sizes}")
  known = math.prod(size for size in sizes.values() if size != -1)
  if free:
    if num_devices % known:
      raise PlanError(f"{num_devices} devices cannot be split into mesh {sizes}")
    sizes[free[0]] = num_devices // known
  if math.prod(sizes.values()) != num_devices:
    raise PlanError(f"mesh {sizes} needs {math.prod(sizes.values())} devices, the slice has {num_devices}")
  return sizes


def _parts(mesh_axes, mesh: dict[str, int]) -> int:
  if mesh_axes is None:
    return 1
  return math.prod(mesh[a] for a in ((mesh_axes,) if isinstance(mesh_axes, str) else mesh_axes))


def _split(n: int, parts: int) -> int:
  return -(-n // parts)


def param_bytes_per_device(shapes, specs, mesh: dict[str, int], rules) -> tuple[Any, list[str]]:
  """Per-device bytes of every param (a tree like ``shapes``), and the params a mesh axis does not divide."""
  import flax.linen as nn
  import jax
  import numpy as np
  from jax.sharding import PartitionSpec

  problems = []
  spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))

  def per_device(path, shape, spec):
    axes = tuple(nn.logical_to_mesh_axes(spec, rules)) + (None,) * len(shape.shape)
    count = 1
    for dim, mesh_axes in zip(shape.shape, axes):
      parts = _parts(mesh_axes, mesh)
      if dim % parts:
        problems.append(f"param {jax.tree_util.keystr(path)} dim {dim} is not divisible by its {parts} shards")
      count *= _split(dim, parts)
    return count * np.dtype(shape.dtype).itemsize

  paths_shapes = jax.tree_util.tree_flatten_with_path(shapes)[0]
  leaves = [per_device(p, s, spec) for (p, s), spec in zip(paths_shapes, spec_leaves)]
  return jax.tree.unflatten(jax.tree.structure(shapes), leaves), problems


# ----------------------------------------------------------------------------------------------------------------
# The plan.


@dataclasses.dataclass(frozen=True)
class Assumptions:
  seq_len: int | None = None  # tokens per row (None: config.max_sequence_len)
  image_fraction: float = 0.5  # at most this share of a row's tokens are image tokens
  prefill_len: int | None = None  # tokens of one appended rollout segment (None: one image + PROMPT_TEXT_TOKENS)
  headroom: float = 0.10  # HBM kept free for XLA's own buffers and fragmentation

  def __post_init__(self):
    if self.seq_len is not None and self.seq_len < 1:
      raise PlanError(f"--seq-len must be >= 1, got {self.seq_len}")
    if not 0.0 <= self.image_fraction < 1.0:
      raise PlanError(f"--image-fraction must be in [0, 1), got {self.image_fraction}")
    if self.prefill_len is not None and self.prefill_len < 1:
      raise PlanError(f"--prefill-len must be >= 1, got {self.prefill_len}")
    if not 0.0 <= self.headroom < 1.0:
      raise PlanError(f"--headroom must be in [0, 1), got {self.headroom}")


PROMPT_TEXT_TOKENS = 512  # text around an image in a prompt or feedback turn (system prompt, rules, feedback)


def image_tokens(config, model_config) -> tuple[int, int]:
  """(tokens of the largest training image, pixels of its side): the task's largest image side
  (``task.max_image_side``), shrunk by the processor to ``image.max_pixels``; one token per (patch x merge)^2
  pixels, counted as a square of that side."""
  from vrrl_jax import experiment, run_config

  side = run_config.task(config).max_image_side(config)
  image = experiment.image_config_from(config)
  side = min(side, math.isqrt(image.max_pixels))
  unit = image.patch_size * model_config.vision.spatial_merge_size
  return _split(side, unit) ** 2, side


@dataclasses.dataclass(frozen=True)
class Plan:
  """Per-device bytes by phase, the verdict and the roofline. ``memory`` maps phase -> {item: bytes}."""

  mesh: dict[str, int]
  num_devices: int
  model: dict[str, Any]
  workload: dict[str, Any]
  memory: dict[str, dict[str, int]]
  peaks: dict[str, int]
  activations: dict[str, int]  # text / vision, with and without remat (one update micro-batch)
  roofline: dict[str, dict[str, float]]
  notes: list[str]
  problems: list[str]
  hbm_bytes: int | None = None
  limit_bytes: int | None = None

  @property
  def peak(self) -> int:
    return max(self.peaks.values())

  @property
  def fits(self) -> bool | None:
    if self.limit_bytes is None:
      return None
    return not self.problems and self.peak <= self.limit_bytes

  def to_json(self) -> dict:
    return {**dataclasses.asdict(self), "peak_bytes": self.peak, "fits": self.fits}


def _dtype_bytes(name: str) -> int:
  return {"float32": 4, "bfloat16": 2}[name]


def _text_layer_values(text, tensor: int) -> int:
  """Values one decoder layer keeps per token (module docstring)."""
  q, kv = text.num_attention_heads * text.head_dim, text.num_key_value_heads * text.head_dim
  return 5 * text.hidden_size + _split(3 * q + 3 * kv, tensor) + _split(4 * text.intermediate_size, tensor)


def _vision_block_values(vision, tensor: int) -> int:
  return 5 * vision.hidden_size + _split(6 * vision.hidden_size, tensor) + _split(4 * vision.intermediate_size, tensor)


def _vision_attention(model_config, patches: int) -> list[tuple[int, int, int]]:
  """(queries after padding, keys per query, blocks of that kind) for the window and the frame blocks."""
  from vrrl_jax.models.vision import round_up, window_patches

  vision = model_config.vision
  full = getattr(vision, "fullatt_block_indexes", None)
  num_full = vision.depth if full is None else len(full)
  kinds = []
  if full is not None and num_full < vision.depth:  # Qwen2.5-VL window blocks: bands of 3 windows
    window = window_patches(vision)
    kinds.append((round_up(patches, window), 3 * window, vision.depth - num_full))
  if model_config.max_frame_patches is not None:  # frame blocks: bands of 3 frame chunks (local_attention)
    chunk = round_up(model_config.max_frame_patches, vision.merge_unit)
    kinds.append((round_up(patches, chunk), 3 * chunk, num_full))
  else:  # blocked self-attention over every patch of the call
    padded = round_up(patches, ATTENTION_BLOCK) if patches > ATTENTION_BLOCK else patches
    kinds.append((padded, padded, num_full))
  return kinds


def _activations(model_config, rows: int, seq: int, patches: int, tensor: int, remat: bool) -> dict[str, int]:
  """Update activations of one micro-batch on one device: ``rows`` local rows of ``seq`` tokens, ``patches``
  (replicated) image patches."""
  text, vision = model_config.text, model_config.vision
  act = _dtype_bytes(model_config.dtype)
  tokens = rows * seq
  heads = _split(text.num_attention_heads, tensor)
  padded = _split(seq, ATTENTION_BLOCK) * ATTENTION_BLOCK if seq > ATTENTION_BLOCK else seq
  scores = rows * heads * padded * padded
  values = tokens * _text_layer_values(text, tensor) * act
  vision_heads = _split(vision.num_heads, tensor)
  kinds = _vision_attention(model_config, patches) if patches else []
  vision_values = patches * _vision_block_values(vision, tensor) * act
  pixels = patches * vision.patch_dim * act  # the patch embedding's input, kept for its weight gradient
  scan = model_config.scan_layers
  text_bytes = attention_backward_bytes(remat, scan, band=False)
  vision_bytes = [attention_backward_bytes(remat, scan, band=q != k) * vision_heads * q * k for q, k, _ in kinds]
  # Scanned vision blocks choose window or frame attention with a traced cond: every block keeps both's residuals.
  block_attention = sum(vision_bytes) if scan else max(vision_bytes, default=0)
  if remat:
    text_kept = text.num_hidden_layers * tokens * text.hidden_size * act
    text_working = int(REMAT_WORKING * values) + text_bytes * scores
    vision_kept = pixels + vision.depth * patches * vision.hidden_size * act
    vision_working = int(REMAT_WORKING * vision_values) + block_attention
  else:
    kept = NO_REMAT_KEPT[scan]
    text_kept = text.num_hidden_layers * (int(kept * values) + text_bytes * scores)
    text_working = 0
    vision_kept = pixels + vision.depth * int(kept * vision_values)
    if scan:
      vision_kept += vision.depth * block_attention
    else:
      vision_kept += sum(nbytes * n for nbytes, (_, _, n) in zip(vision_bytes, kinds))
    vision_working = 0
  vocab = _split(text.vocab_size, tensor)
  lm_head = rows * min(LOGPROB_CHUNK, seq) * vocab * 4 * 4  # logits, probabilities, select, cotangent (fp32)
  return {
    "text kept": text_kept,
    "vision kept": vision_kept,
    "working set": max(text_working, vision_working),
    "lm head chunk": lm_head,
    "total": text_kept + vision_kept + max(text_working, vision_working) + lm_head,
  }


def _rollout_memory(model_config, rows: int, mesh, cache_len: int, prefill: int, patches_segment: int, max_patches):
  """Sampler memory for ``rows`` rows: ({item: bytes}, peak without the persistent state, kv cache bytes)."""
  text, vision = model_config.text, model_config.vision
  tensor, act = mesh["tensor"], _dtype_bytes(model_config.dtype)
  rows_dev = _split(rows, mesh["data"] * mesh["fsdp"])
  kv_heads = _split(text.num_key_value_heads, tensor)
  kv = rows_dev * text.num_hidden_layers * cache_len * kv_heads * text.head_dim * 2 * act
  heads = _split(text.num_attention_heads, tensor)
  prefill_text = rows_dev * prefill * (_text_layer_values(text, tensor) + text.hidden_size) * act
  prefill_text += rows_dev * prefill * cache_len * (ATTENTION_FORWARD_BYTES * heads + 1)  # scores and mask
  patches = rows * patches_segment
  if max_patches is not None:  # the sampler splits a prefill into calls over consecutive rows
    patches = max(min(patches, max_patches), patches_segment)
  prefill_vision = 0
  if patches:
    vision_heads = _split(vision.num_heads, tensor)
    prefill_vision = patches * (_vision_block_values(vision, tensor) + vision.hidden_size) * act
    prefill_vision += max(
      ATTENTION_FORWARD_BYTES * vision_heads * q * k for q, k, _ in _vision_attention(model_config, patches)
    )
  logits = rows_dev * _split(text.vocab_size, tensor) * 4 * 3
  items = {
    f"kv cache ({rows} rows x {cache_len} slots)": kv,
    "cache copy when a turn grows the bucket": int(CACHE_GROWTH_COPY * kv),
    f"prefill of a {prefill}-token segment: decoder, scores vs the cache": prefill_text,
    f"prefill of a {prefill}-token segment: vision tower ({patches} patches per call)": prefill_vision,
    "decode logits and sampling": logits,
  }
  return items, kv + max(int(CACHE_GROWTH_COPY * kv), prefill_text + prefill_vision, logits), kv


def plan(config, topology: str | None = None, num_devices: int | None = None, assumptions=Assumptions()) -> Plan:
  """The plan of ``config`` on ``topology`` (v5e-8, v4-8, v5p-16, ...) or, without one, on ``num_devices``
  devices with no HBM verdict (tests compare it with XLA on the CPU mesh)."""
  import jax
  import numpy as np
  import optax

  from vrrl_jax import launch, run_config
  from vrrl_jax.models import families
  from vrrl_jax.parallel import rules as rules_lib
  from vrrl_jax.rl import train_state as ts_lib

  chip = None
  if topology is not None:
    try:
      accelerator = launch.parse_accelerator(topology)
    except launch.LaunchError as e:
      raise PlanError(str(e)) from None
    chip = CHIPS[accelerator.generation.name]
    num_devices = accelerator.chips
  if num_devices is None:
    raise PlanError("give a topology (v5e-8, v4-8, v5p-16, ...) or a number of devices")
  rules = rules_lib.DEFAULT_RULES
  mesh = resolve_mesh(config.mesh, num_devices)
  batch_shards, tensor = mesh["data"] * mesh["fsdp"], mesh["tensor"]
  model_config = model_config_of(config)
  text, vision = model_config.text, model_config.vision
  problems, notes = [], []

  # --- Persistent state: params, reference, optimizer ------------------------------------------------------------
  shapes, specs = families.abstract_params(model_config)
  param_bytes, bad = param_bytes_per_device(shapes, specs, mesh, rules)
  problems += bad
  params = int(sum(jax.tree.leaves(param_bytes)))
  param_dtype_bytes = _dtype_bytes(model_config.param_dtype)
  param_count_dev = params // param_dtype_bytes
  kl_coef = float(config.rl.loss.kl_coef)
  keep_reference = kl_coef > 0
  optimizer = ts_lib.make_optimizer(run_config.optimizer_config(config, float(config.rl.learning_rate)))
  opt_shapes = jax.eval_shape(optimizer.init, shapes)
  opt_leaves = optax.tree_utils.tree_map_params(
    optimizer,
    lambda _, nbytes: nbytes,
    opt_shapes,
    param_bytes,
    transform_non_params=lambda x: int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize,
  )
  opt_bytes = int(sum(jax.tree.leaves(opt_leaves)))
  on_host = keep_reference and run_config.reference_memory(config) == "host"
  if on_host:
    notes.append(
      f"the reference lives in pinned host memory ({params / GiB:.2f} GiB per device there); each reference log-prob "
      "pass copies it to the devices for that pass only (in the log-prob phase, not at the update's peak)"
    )
  if not keep_reference:
    reference_name = "reference copy (kl_coef 0: none)"
  else:
    reference_name = f"reference copy (kl_coef {kl_coef:g}{', in host memory' if on_host else ''})"
  persistent = {
    "params (policy)": params,
    reference_name: params if keep_reference and not on_host else 0,
    "optimizer state (adamw mu, nu)": opt_bytes,
  }

  # --- Workload ----------------------------------------------------------------------------------------------------
  seq = int(assumptions.seq_len or config.max_sequence_len)
  prompts, samples = int(config.rl.prompts_per_step), int(config.rl.samples_per_prompt)
  micro = int(config.rl.micro_batches)
  buckets = run_config.sampler_buckets(config)
  rollout_rows = buckets.batch(prompts * samples, batch_shards)
  rows_multiple = micro * batch_shards
  update_rows = max(prompts * samples, run_config.shape_floor(config.rl, "update_min_rows", 1))
  update_rows = _split(update_rows, rows_multiple) * rows_multiple
  rows_micro = update_rows // micro
  rows_dev = _split(rows_micro, batch_shards)
  merge = vision.merge_unit
  tokens_image, image_side = image_tokens(config, model_config)
  images_row = 1 + int(config.rl.max_turns)  # the map, then one feedback image per turn
  image_tokens_row = min(images_row * tokens_image, int(assumptions.image_fraction * seq))
  patches_row = image_tokens_row * merge
  patches_micro = rows_micro * patches_row
  cache_len = buckets.cache(seq)
  remat = model_config.remat_policy in REMAT_POLICIES
  if model_config.remat_policy is not None and not remat:
    notes.append(f"remat_policy {model_config.remat_policy!r} keeps more than layer inputs: planned as no remat")
  act_bytes = _dtype_bytes(model_config.dtype)

  # --- Update ------------------------------------------------------------------------------------------------------
  activations = {
    "text, remat": _activations(model_config, rows_dev, seq, 0, tensor, True)["total"],
    "text, no remat": _activations(model_config, rows_dev, seq, 0, tensor, False)["total"],
    "vision, remat": _activations(model_config, 0, 1, patches_micro, tensor, True)["total"],
    "vision, no remat": _activations(model_config, 0, 1, patches_micro, tensor, False)["total"],
  }
  act = _activations(model_config, rows_dev, seq, patches_micro, tensor, remat)
  row_arrays = 4 + 4 + 12 + 4 + 4 + 4 + (4 if keep_reference else 0)  # ids, segments, positions, targets, mask, logp
  batch = micro * (rows_dev * seq * row_arrays + rows_dev * 4)
  batch += micro * patches_micro * (vision.patch_dim * 4 + 5 * 4)  # pixels (float32) and patch indices, replicated
  label = "remat nothing_saveable" if remat else "no remat"
  update = {
    "gradients (fp32 sum + one micro-batch's)": param_count_dev * 4 + params,
    "update batch (micro-batched rows, replicated images)": batch,
    f"activations, decoder layers ({label})": act["text kept"],
    f"activations, vision tower ({label})": act["vision kept"],
    "backward working set (one layer / block, attention scores)": act["working set"],
    "lm head chunk (log-softmax)": act["lm head chunk"],
  }
  update_peak = sum(persistent.values()) + batch + update["gradients (fp32 sum + one micro-batch's)"]
  update_peak += max(act["total"], param_count_dev * 4)  # the optimizer's update tree, after activations are freed

  # --- Log-prob passes (forward only) ----------------------------------------------------------------------------
  vision_heads = _split(vision.num_heads, tensor)
  kinds = _vision_attention(model_config, patches_micro) if patches_micro else []
  forward_text = rows_dev * seq * (_text_layer_values(text, tensor) + text.hidden_size) * act_bytes
  forward_text += rows_dev * min(LOGPROB_CHUNK, seq) * _split(text.vocab_size, tensor) * 4 * 2
  forward_vision = patches_micro * (_vision_block_values(vision, tensor) + vision.hidden_size) * act_bytes
  forward_vision += max([ATTENTION_FORWARD_BYTES * vision_heads * q * k for q, k, _ in kinds], default=0)
  logprob = {
    "log-prob batch and outputs": batch + micro * rows_dev * seq * 4,
    "forward working set (decoder layer, lm head chunk)": forward_text,
    "forward working set (vision tower, frame attention)": forward_vision,
  }
  if on_host:  # the reference's pass: its copy on the devices, for that pass only
    logprob["reference copied from host memory"] = params
  logprob_peak = (
    sum(persistent.values())
    + logprob["log-prob batch and outputs"]
    + logprob.get("reference copied from host memory", 0)
    + max(forward_text, forward_vision)
  )

  # --- Rollout (RL samples) and evaluation (greedy, one row per map) -----------------------------------------------
  prefill = min(assumptions.prefill_len or tokens_image + PROMPT_TEXT_TOKENS, cache_len)
  patches_segment = min(tokens_image, prefill) * merge
  persistent_total = sum(persistent.values())
  rollout, rollout_peak, kv = _rollout_memory(
    model_config, rollout_rows, mesh, cache_len, prefill, patches_segment, buckets.max_prefill_patches
  )
  rollout_peak += persistent_total
  eval_rows = buckets.batch(int(config.eval.batch_size), batch_shards)
  evaluation, eval_peak, _ = _rollout_memory(
    model_config, eval_rows, mesh, cache_len, prefill, patches_segment, buckets.max_prefill_patches
  )
  eval_peak += persistent_total

  # --- Roofline ------------------------------------------------------------------------------------------------------
  counts = {"text": 0, "vision": 0, "head": text.vocab_size * text.hidden_size}
  total_params = total_param_bytes = 0
  for path, shape in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    name = jax.tree_util.keystr(path)
    size = int(np.prod(shape.shape))
    total_params += size
    total_param_bytes += size * np.dtype(shape.dtype).itemsize
    if "visual" in name:
      counts["vision"] += size
    elif "embed_tokens" not in name and "lm_head" not in name:
      counts["text"] += size
  max_turns, max_new = int(config.rl.max_turns), int(config.rl.max_new_tokens)
  # A full row: the prompt, then turns of max_new sampled tokens each followed by a feedback segment, until the
  # turns or the row run out; turns are sequential, so the decode loop runs turns x max_new steps.
  turns = min(max_turns, max(0, seq - prefill) / (max_new + prefill))
  decode_steps = math.ceil(turns * max_new)
  prefill_per_row = seq - decode_steps
  prefill_tokens = prompts * min(prefill, prefill_per_row) + rollout_rows * max(0, prefill_per_row - prefill)
  attention_width = text.num_hidden_layers * text.num_attention_heads * text.head_dim
  vision_width = vision.depth * vision.hidden_size

  def vision_flops(patches: int) -> float:
    if not patches:
      return 0.0
    band = sum(k * n for _, k, n in _vision_attention(model_config, patches)) / vision.depth
    return 2.0 * counts["vision"] * patches + 4.0 * vision_width * patches * band

  # (text FLOPs, vision FLOPs) per phase: the text work splits over every device, the vision tower's only over
  # tensor (its inputs are replicated over data x fsdp, every device encodes all of them).
  prefill_flops = (
    2.0 * counts["text"] * prefill_tokens + 4.0 * attention_width * prefill_tokens * cache_len,
    vision_flops(prefill_tokens * patches_segment // prefill),
  )
  forward_tokens = update_rows * seq
  forward_flops = (
    2.0 * (counts["text"] + counts["head"]) * forward_tokens + 2.0 * attention_width * seq * forward_tokens,
    vision_flops(update_rows * patches_row),
  )
  roofline = {}
  if chip is not None:
    peak_flops = chip.peak_bf16_flops * num_devices

    def compute(flops: tuple[float, float], factor: float) -> dict:
      text_flops, image_flops = factor * flops[0], factor * flops[1]
      seconds = text_flops / peak_flops + image_flops / (chip.peak_bf16_flops * tensor)
      return {"flops": text_flops + image_flops, "seconds": seconds, "bound": "compute"}

    bytes_per_step = total_param_bytes / tensor + kv
    decode_flops = (
      2.0 * (counts["text"] + counts["head"]) * rollout_rows + 4.0 * attention_width * rollout_rows * cache_len
    )
    per_step = max(bytes_per_step / chip.hbm_bytes_per_s, decode_flops / peak_flops)
    roofline = {
      "rollout prefill": compute(prefill_flops, 1),
      "rollout decode": {
        "steps": decode_steps,
        "bytes per step per device": bytes_per_step,
        "seconds": decode_steps * per_step,
        "bound": "memory" if bytes_per_step / chip.hbm_bytes_per_s >= decode_flops / peak_flops else "compute",
      },
      "log-probs": compute(forward_flops, 2 if keep_reference else 1),
      "update": compute(forward_flops, 4 if remat else 3),  # forward, backward (2x), and the remat forward
    }
    roofline["total"] = {"seconds": sum(v["seconds"] for v in roofline.values())}
    if mesh["fsdp"] > 1:
      gathered = total_param_bytes / tensor * (mesh["fsdp"] - 1) / mesh["fsdp"]
      notes.append(
        f"decode multiplies with fsdp-sharded params: {gathered / GB:.2f} GB per device are all-gathered over ICI "
        "per token step (not in the roofline)"
      )

  if int(config.sft.steps) > 0:
    notes.append(
      f"sft.steps={int(config.sft.steps)}: the SFT warm start (sft.batch_size {int(config.sft.batch_size)}, no "
      "reference copy) is not planned; plan it with --config.rl.prompts_per_step / micro_batches set to match"
    )
  if update_rows != prompts * samples:
    notes.append(f"update batch padded from {prompts * samples} to {update_rows} rows ({micro} x data x fsdp)")
  if patches_micro:
    notes.append(
      f"vision inputs are replicated: each device encodes all {patches_micro} patches of a micro-batch "
      f"({rows_micro} rows x {patches_row})"
    )
  model = {
    "model_type": model_config.model_type,
    "params": total_params,
    "text_params": counts["text"],
    "vision_params": counts["vision"],
    "param_dtype": model_config.param_dtype,
    "dtype": model_config.dtype,
    "remat_policy": model_config.remat_policy,
    "max_frame_patches": model_config.max_frame_patches,
  }
  workload = {
    "prompts": prompts,
    "samples": samples,
    "rollout_rows": rollout_rows,
    "cache_len": cache_len,
    "update_rows": update_rows,
    "micro_batches": micro,
    "rows_per_micro_batch": rows_micro,
    "rows_per_device": rows_dev,
    "seq_len": seq,
    "image_side_px": image_side,
    "tokens_per_image": tokens_image,
    "image_tokens_per_row": image_tokens_row,
    "patches_per_row": patches_row,
    "prefill_len": prefill,
    "decode_steps": decode_steps,
  }
  return Plan(
    mesh=mesh,
    num_devices=num_devices,
    model=model,
    workload=workload,
    memory={
      "persistent": persistent,
      "update": update,
      "log-probs": logprob,
      "rollout": rollout,
      f"evaluation (eval.batch_size {int(config.eval.batch_size)})": evaluation,
    },
    peaks={
      "update": update_peak,
      "log-probs": logprob_peak,
      "rollout": rollout_peak,
      f"evaluation (eval.batch_size {int(config.eval.batch_size)})": eval_peak,
    },
    activations=activations,
    roofline=roofline,
    notes=notes,
    problems=problems,
    hbm_bytes=chip.hbm_bytes if chip else None,
    limit_bytes=int(chip.hbm_bytes * (1 - assumptions.headroom)) if chip else None,
  )


# ----------------------------------------------------------------------------------------------------------------
# Output.


def _gib(n: float) -> str:
  return f"{n / GiB:8.2f}"


def format_plan(result: Plan, config_path: str, topology: str | None) -> str:
  w = result.workload
  m = result.model
  mesh = " ".join(f"{k}={v}" for k, v in result.mesh.items())
  lines = [
    f"plan: {config_path} on {topology or f'{result.num_devices} devices'}; mesh {mesh}",
    f"model: {m['model_type']}, {m['params'] / 1e9:.2f} B params ({m['vision_params'] / 1e9:.2f} B vision), params "
    f"{m['param_dtype']}, compute {m['dtype']}, remat {m['remat_policy']}, max_frame_patches {m['max_frame_patches']}",
    f"rollout: {w['prompts']} prompts x {w['samples']} samples = {w['rollout_rows']} rows, cache {w['cache_len']} "
    f"slots, {w['decode_steps']} decode steps; update: {w['update_rows']} rows in {w['micro_batches']} micro-batches "
    f"of {w['rows_per_micro_batch']} ({w['rows_per_device']} per device) x {w['seq_len']} tokens",
    f"images: {w['image_side_px']} px, {w['tokens_per_image']} tokens each; {w['image_tokens_per_row']} image "
    f"tokens ({w['patches_per_row']} patches) per row; rollout segments of {w['prefill_len']} tokens",
    "",
    f"{'per-device memory':<78} {'GiB':>8}",
  ]
  for phase, items in result.memory.items():
    lines.append(f"  {phase}")
    for name, nbytes in items.items():
      lines.append(f"    {name:<74} {_gib(nbytes)}")
    if phase in result.peaks:
      lines.append(f"    {'= ' + phase + ' peak (with the persistent state)':<74} {_gib(result.peaks[phase])}")
  a = result.activations
  lines.append(
    f"  one update micro-batch's activations: decoder {a['text, remat'] / GiB:.2f} GiB with remat, "
    f"{a['text, no remat'] / GiB:.2f} without; vision tower {a['vision, remat'] / GiB:.2f} with, "
    f"{a['vision, no remat'] / GiB:.2f} without"
  )
  if result.limit_bytes is not None:
    worst = max(result.peaks, key=result.peaks.get)
    verdict = "FITS" if result.fits else "DOES NOT FIT"
    lines += [
      "",
      f"peak {result.peak / GiB:.2f} GiB ({worst}) of {result.hbm_bytes / GiB:.2f} GiB HBM, limit "
      f"{result.limit_bytes / GiB:.2f} GiB with headroom: {verdict}",
    ]
  for problem in result.problems:
    lines.append(f"problem: {problem}")
  if result.roofline:
    lines += ["", "roofline per RL step (lower bounds: peak bf16 FLOP/s, HBM bandwidth)"]
    for phase, r in result.roofline.items():
      if phase == "total":
        lines.append(f"  {'total':<18} {r['seconds']:10.1f} s")
      elif "flops" in r:
        lines.append(f"  {phase:<18} {r['seconds']:10.1f} s   {r['flops'] / 1e12:10.0f} TFLOP, {r['bound']}-bound")
      else:
        lines.append(
          f"  {phase:<18} {r['seconds']:10.1f} s   {r['steps']} steps x {r['bytes per step per device'] / GB:.2f} GB "
          f"per device, {r['bound']}-bound"
        )
  for note in result.notes:
    lines.append(f"note: {note}")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m vrrl_jax.plan", description=__doc__.split("\n")[0])
  parser.add_argument("--config", required=True, help="config file (get_config())")
  parser.add_argument("--topology", required=True, help="accelerator type: v5e-8, v4-8, v5p-16, v6e-8, ...")
  parser.add_argument("--seq-len", dest="seq_len", type=int, help="tokens per row (default max_sequence_len)")
  parser.add_argument(
    "--image-fraction",
    dest="image_fraction",
    type=float,
    default=Assumptions.image_fraction,
    help="cap on image tokens",
  )
  parser.add_argument("--prefill-len", dest="prefill_len", type=int, help="tokens of one appended rollout segment")
  parser.add_argument("--headroom", type=float, default=Assumptions.headroom, help="share of HBM kept free")
  parser.add_argument("--json", action="store_true", help="one JSON line instead of the table")
  args, overrides = parser.parse_known_args(argv)
  try:
    assumptions = Assumptions(args.seq_len, args.image_fraction, args.prefill_len, args.headroom)
    config = load_config(args.config, overrides)
    result = plan(config, args.topology, assumptions=assumptions)
  except PlanError as e:
    parser.error(str(e))
  if args.json:
    print(json.dumps({"config": args.config, "topology": args.topology, **result.to_json()}))
  else:
    print(format_plan(result, args.config, args.topology))
  return 0 if result.fits else 1


if __name__ == "__main__":
  sys.exit(main())
