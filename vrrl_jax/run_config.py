"""A run's ml_collections config, read into the typed configs each part of the run takes, and checked whole.

``validate(config)`` runs when a run or an eval starts, before any model is built or program compiled: it reads
every section the way the run will (the same functions below build the same dataclasses, whose own checks apply),
adds the checks that span sections, and refuses unknown keys. The first problem stops the run with one
``ConfigError`` naming the field, the value and what is allowed, so a typo costs seconds, not an SFT phase.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import pathlib
from typing import Any, Iterator, Mapping

import ml_collections

from vrrl_jax import experiment, tasks
from vrrl_jax.data import batching
from vrrl_jax.data import tokenizer as tokenizer_lib
from vrrl_jax.parallel import mesh as mesh_lib
from vrrl_jax.rl import filtering as filtering_lib
from vrrl_jax.rl import loss as loss_lib
from vrrl_jax.rl import modes as modes_lib
from vrrl_jax.rl import prefix_buffer as buffer_lib
from vrrl_jax.rl import step as rl_step
from vrrl_jax.rl import train_state as ts_lib
from vrrl_jax.sampling import buckets as buckets_lib
from vrrl_jax.sampling import rollout as rollout_lib


class ConfigError(ValueError):
  """A config value the run cannot use; the message names the field."""


def as_dict(value) -> dict:
  """A config section (ConfigDict or mapping) as a plain dict."""
  return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else dict(value)


# ----------------------------------------------------------------------------------------------------------------
# Sections into the typed configs of the parts that use them.


def sft_optimizer_config(config) -> ts_lib.OptimizerConfig:
  """The SFT phase's optimizer: ``sft.learning_rate``, and with ``sft.cosine_decay`` a cosine to 0 at the last SFT
  step (a constant lr makes greedy accuracy swing between checkpoints; BENCHMARKS.md, "How long to warm start")."""
  decay_steps = int(config.sft.steps) if config.sft.cosine_decay else 0
  return optimizer_config(config, float(config.sft.learning_rate), decay_steps)


def optimizer_config(config, learning_rate: float, decay_steps: int = 0) -> ts_lib.OptimizerConfig:
  """``config.optimizer`` at ``learning_rate``; ``decay_steps`` > 0: a cosine decay to 0 at that update."""
  opt = as_dict(config.optimizer)
  return ts_lib.OptimizerConfig(
    learning_rate=learning_rate,
    b1=opt["b1"],
    b2=opt["b2"],
    eps=opt["eps"],
    weight_decay=opt["weight_decay"],
    max_grad_norm=opt["grad_clip_norm"],
    warmup_steps=opt["warmup_steps"],
    decay_steps=decay_steps,
    frozen=tuple(opt["frozen"]),
    lr_scale=tuple((prefix, factor) for prefix, factor in dict(opt["lr_scale"]).items()),
  )


def task(config) -> tasks.Task:
  """The task package ``config.task`` names."""
  return tasks.load(config.task)


def transcript_config(config):
  """``config.sft.transcripts`` as the task reads it."""
  return task(config).transcript_config(config)


def buffer_config(config) -> buffer_lib.PrefixBufferConfig:
  return buffer_lib.PrefixBufferConfig(**as_dict(config.rl.buffer))


def mode_config(config) -> modes_lib.ModeConfig:
  w = as_dict(config.rl.mode_weights)
  unknown = sorted(set(w) - set(buffer_lib.ROLLOUT_MODES))
  if unknown:
    raise ValueError(f"unknown rollout mode(s) {unknown}; modes are {list(buffer_lib.ROLLOUT_MODES)}")
  return modes_lib.ModeConfig(
    normal_weight=w["normal"],
    random_start_weight=w["random_start"],
    prefix_buffer_weight=w["prefix_buffer"],
    random_init_weight=w.get("random_init", 0.0),  # optional: only tasks with an injected roll-in offer it
    random_start_turn_min=config.rl.random_start_turn_min,
    mask_all_until_final=config.rl.mask_all_until_final,
    mask_buffer_prefix=config.rl.mask_buffer_prefix,
  )


def step_config(config) -> rl_step.StepConfig:
  return rl_step.StepConfig(
    loss=loss_lib.PolicyLossConfig(**as_dict(config.rl.loss)),
    optimizer=optimizer_config(config, config.rl.learning_rate),
    temperature=config.rl.temperature,
  )


def reference_memory(config) -> str:
  """``config.rl.reference_memory``: "device" (the default) or "host" (the frozen reference in pinned host memory)."""
  return ts_lib.check_reference_memory(config.rl.get("reference_memory", "device"))


def filter_config(config) -> filtering_lib.FilterConfig:
  return filtering_lib.FilterConfig(**as_dict(config.rl.filter))


def reward_config(config):
  """``config.rl.reward`` as the task reads it."""
  return task(config).reward_config(config)


def rollout_config(
  config, *, greedy: bool = False, max_turns: int | None = None, style: str = "default"
) -> rollout_lib.RolloutConfig:
  """RL sampling (``config.rl``) or greedy evaluation (``config.eval``)."""
  section = config.eval if greedy else config.rl
  return rollout_lib.RolloutConfig(
    max_turns=max_turns if max_turns is not None else section.max_turns,
    max_new_tokens=section.max_new_tokens,
    max_sequence_len=config.max_sequence_len,
    temperature=0.0 if greedy else float(config.rl.temperature),
    top_p=1.0 if greedy else float(config.rl.top_p),
    style=style,
    episode_options=tuple(sorted(task(config).episode_options(config).items())),
    stop_strings=tuple(task(config).TURN_STOP_STRINGS),
  )


def sampler_buckets(config) -> buckets_lib.Buckets:
  """The sampler's shape buckets from ``config.sampler`` (``Buckets`` fields; absent: the defaults)."""
  fields = as_dict(config.get("sampler", None) or {})
  known = {f.name for f in dataclasses.fields(buckets_lib.Buckets)}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f"config.sampler has unknown keys {unknown}; known: {sorted(known)}")
  return buckets_lib.Buckets(**fields)


def shape_floor(section, name: str, default: int) -> int:
  """A lower bound on one padded batch dimension (``config.<phase>.<name>``). Every batch at or under the floors
  shares one compiled program: on a small CPU run, compiling a program per shape bucket costs more than the
  padding (10-18 s per update program for the tiny model)."""
  value = section.get(name, default)
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"config {name} must be a positive int, got {value!r}")
  return value


# ----------------------------------------------------------------------------------------------------------------
# The whole config, checked at startup.

TOP_LEVEL_KEYS = (
  "task",
  "seed",
  "init_checkpoint",
  "tokenizer_dir",
  "model",
  "max_sequence_len",
  "model_options",
  "image",
  "mesh",
  "data",
  "optimizer",
  "sft",
  "rl",
  "sampler",
  "eval",
  "checkpoint",
  "log",
)
SFT_KEYS = (
  "steps",
  "batch_size",
  "micro_batches",
  "learning_rate",
  "cosine_decay",
  "min_length",
  "min_patches",
  "wrong_route_loss",
  "transcripts",
)
RL_KEYS = (
  "steps",
  "prompts_per_step",
  "samples_per_prompt",
  "micro_batches",
  "learning_rate",
  "max_turns",
  "max_new_tokens",
  "temperature",
  "top_p",
  "update_min_rows",
  "update_min_length",
  "update_min_patches",
  "mode_weights",
  "random_start_turn_min",
  "mask_all_until_final",
  "mask_buffer_prefix",
  "truncated_loss",  # optional (default True); False: a truncated sample carries no loss at all (ViGoRL)
  "reference_memory",  # optional (default "device"); "host": the KL reference in pinned host memory
  "buffer",
  "filter",
  "loss",
  "reward",
)
# config.eval also holds the task's own keys (task.EVAL_KEYS, e.g. FrozenLake's levels and maps_per_level).
EVAL_KEYS = ("max_turns", "max_new_tokens", "batch_size", "before_rl", "gallery_episodes")
OPTIMIZER_KEYS = ("b1", "b2", "eps", "weight_decay", "grad_clip_norm", "warmup_steps", "frozen", "lr_scale")
CHECKPOINT_KEYS = ("every", "keep")
LOG_KEYS = ("console_keys",)
MODEL_OPTION_KEYS = ("dtype", "param_dtype", "scan_layers", "remat_policy", "max_frame_patches")


@contextlib.contextmanager
def reading(name: str) -> Iterator[None]:
  """Re-raises a ValueError/TypeError/KeyError from reading ``name`` as a ConfigError that names it."""
  try:
    yield
  except ConfigError:
    raise
  except (KeyError, AttributeError) as e:
    raise ConfigError(f"config.{name}: missing key {e}") from None
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config.{name}: {e}") from None


def require_keys(config, section: str, allowed: tuple[str, ...]) -> None:
  value = config if section == "" else _get(config, section)
  where = "config" if section == "" else f"config.{section}"
  if not isinstance(value, (Mapping, ml_collections.ConfigDict)):
    raise ConfigError(f"{where} must be a section (dict), got {value!r}")
  unknown = sorted(set(value.keys()) - set(allowed))
  if unknown:
    raise ConfigError(f"{where} has unknown key(s) {unknown}; known: {sorted(allowed)}")


def require_int(config, path: str, low: int) -> int:
  value = _get(config, path)
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
    raise ConfigError(f"config.{path}={value!r}: must be an int >= {low}")
  return int(value)


def require_number(config, path: str, low: float, high: float = math.inf, *, low_open: bool = False) -> float:
  value = _get(config, path)
  ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(float(value))
  ok = ok and (value > low if low_open else value >= low) and value <= high
  if not ok:
    bounds = f"{'(' if low_open else '['}{low}, {high}]"
    raise ConfigError(f"config.{path}={value!r}: must be a finite number in {bounds}")
  return float(value)


def require_bool(config, path: str) -> bool:
  value = _get(config, path)
  if not isinstance(value, bool):
    raise ConfigError(f"config.{path}={value!r}: must be True or False")
  return value


def _get(config, path: str) -> Any:
  value = config
  for part in path.split("."):
    if not isinstance(value, (Mapping, ml_collections.ConfigDict)) or part not in value:
      raise ConfigError(f"config.{path} is missing")
    value = value[part]
  return value


def _directory(path_value, name: str, must_hold: tuple[str, ...]) -> pathlib.Path:
  path = pathlib.Path(str(path_value)).expanduser()
  if not path.is_dir():
    raise ConfigError(f"config.{name}={str(path_value)!r}: no such directory")
  if must_hold and not any((path / f).is_file() for f in must_hold):
    raise ConfigError(f"config.{name}={str(path_value)!r}: holds none of {list(must_hold)}")
  for f in must_hold:
    if (path / f).is_file():
      try:
        (path / f).open("rb").close()
      except OSError as e:
        raise ConfigError(f"config.{name}: cannot read {path / f}: {e}") from None
  return path


def check_paths(config) -> None:
  """``init_checkpoint`` and ``tokenizer_dir``, when set: named now, not when the first batch is tokenised."""
  if config.get("init_checkpoint"):
    _directory(config.init_checkpoint, "init_checkpoint", ("config.json", "vrrl_config.json"))
  if config.get("tokenizer_dir"):
    _directory(config.tokenizer_dir, "tokenizer_dir", ("tokenizer.json", "tokenizer_config.json"))


def check_model_side(config):
  """Paths, tokenizer, model, image processor and mesh, read as ``experiment.build`` reads them; returns the mesh
  (its sizes checked against the devices this process sees)."""
  check_paths(config)
  with reading("tokenizer_dir"):
    token_ids = tokenizer_lib.special_token_ids(experiment.load_tokenizer(config))
  with reading("model"):
    experiment.check_token_ids(experiment.model_config_from(config, token_ids), token_ids)
  with reading("image"):
    experiment.image_config_from(config)
  with reading("mesh"):
    return mesh_lib.make_mesh(as_dict(config.mesh))


def validate(config) -> None:
  """Every section read as the run will read it; the first problem raises a ``ConfigError`` naming the field."""
  require_keys(config, "", TOP_LEVEL_KEYS)
  for section, keys in (
    ("sft", SFT_KEYS),
    ("rl", RL_KEYS),
    ("optimizer", OPTIMIZER_KEYS),
    ("checkpoint", CHECKPOINT_KEYS),
    ("log", LOG_KEYS),
    ("model_options", MODEL_OPTION_KEYS),
  ):
    require_keys(config, section, keys)
  require_int(config, "seed", 0)
  with reading("task"):
    the_task = task(config)
  require_keys(config, "eval", EVAL_KEYS + tuple(the_task.EVAL_KEYS))
  max_len = require_int(config, "max_sequence_len", 16)

  mesh = check_model_side(config)

  # Data and optimizer.
  with reading("data"):
    the_task.data_config(config)
  frozen = config.optimizer.frozen
  if isinstance(frozen, str) or not all(isinstance(f, str) and f for f in frozen):
    raise ConfigError(
      f"config.optimizer.frozen={frozen!r}: must be a sequence of parameter path prefixes, e.g. ('visual',)"
    )
  for phase in ("sft", "rl"):
    lr = require_number(config, f"{phase}.learning_rate", 0.0)
    with reading("optimizer"):
      optimizer_config(config, lr)

  # SFT warm start.
  require_int(config, "sft.steps", 0)
  batch = require_int(config, "sft.batch_size", 1)
  micro = require_int(config, "sft.micro_batches", 1)
  if batch % micro:
    raise ConfigError(f"config.sft.micro_batches={micro}: must divide sft.batch_size={batch}")
  shards = mesh.shape["data"] * mesh.shape["fsdp"]  # the rows of a micro-batch are split over both (RL pads its own)
  if (batch // micro) % shards:
    raise ConfigError(
      f"config.sft.batch_size={batch}: {batch // micro} rows per micro-batch cannot be split over the mesh's "
      f"data x fsdp = {shards} devices; make it a multiple of {micro * shards}"
    )
  require_bool(config, "sft.wrong_route_loss")
  require_bool(config, "sft.cosine_decay")
  for name, default in (("min_length", batching.MIN_LENGTH), ("min_patches", batching.MIN_PATCHES)):
    with reading(f"sft.{name}"):
      shape_floor(config.sft, name, default)
  with reading("sft.transcripts"):
    the_task.transcript_config(config)

  # VRRL RL.
  require_int(config, "rl.steps", 0)
  require_int(config, "rl.prompts_per_step", 1)
  # GRPO's advantage is relative to the group: one sample per prompt learns nothing.
  require_int(config, "rl.samples_per_prompt", 2)
  require_int(config, "rl.micro_batches", 1)
  require_int(config, "rl.max_turns", 1)
  require_int(config, "rl.max_new_tokens", 1)
  require_number(config, "rl.temperature", 0.0, low_open=True)
  require_number(config, "rl.top_p", 0.0, 1.0, low_open=True)
  require_int(config, "rl.random_start_turn_min", 0)
  if "truncated_loss" in config.rl:
    require_bool(config, "rl.truncated_loss")
  with reading("rl.reference_memory"):
    reference_memory(config)
  for name in ("mask_all_until_final", "mask_buffer_prefix"):
    require_bool(config, f"rl.{name}")
  for name, default in (
    ("update_min_rows", 1),
    ("update_min_length", batching.MIN_LENGTH),
    ("update_min_patches", batching.MIN_PATCHES),
  ):
    with reading(f"rl.{name}"):
      shape_floor(config.rl, name, default)
  with reading("rl.mode_weights"):
    if mode_config(config).random_init_weight > 0 and not hasattr(the_task, "random_init_turn"):
      raise ValueError(f"random_init > 0, but task {config.task!r} has no injected roll-in (random_init_turn)")
  with reading("rl.loss"):
    step_config(config)
  with reading("rl.buffer"):
    buffer_config(config)
  with reading("rl.filter"):
    filter_config(config)
  with reading("rl.reward"):
    the_task.reward_config(config)
  with reading("rl"):
    rollout_config(config)
  with reading("sampler"):
    sampler_buckets(config)
  for phase in ("rl", "eval"):
    if _get(config, f"{phase}.max_new_tokens") >= max_len:
      raise ConfigError(
        f"config.{phase}.max_new_tokens={_get(config, f'{phase}.max_new_tokens')}: must be "
        f"below max_sequence_len={max_len} (the prompt needs room)"
      )

  # Evaluation.
  with reading("eval"):
    the_task.check_eval_config(config)
  require_int(config, "eval.max_turns", 1)
  require_int(config, "eval.batch_size", 1)
  require_int(config, "eval.gallery_episodes", 0)
  require_bool(config, "eval.before_rl")
  with reading("eval"):
    rollout_config(config, greedy=True)

  # Checkpoints and logging.
  require_int(config, "checkpoint.every", 1)
  require_int(config, "checkpoint.keep", 1)
  keys = config.log.console_keys
  if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
    raise ConfigError(f"config.log.console_keys={keys!r}: must be a sequence of metric names")
