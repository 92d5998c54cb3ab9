"""What train and eval share: from an ml_collections config to the tokenizer, processor, model, mesh and params.

Kept as plain functions returning a small frozen dataclass, so ``train.py`` and ``eval.py`` read top to bottom.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from vrrl_jax import tasks
from vrrl_jax.data import processor as processor_lib
from vrrl_jax.data import task_tokenizer
from vrrl_jax.data import tokenizer as tokenizer_lib
from vrrl_jax.models import families
from vrrl_jax.parallel import mesh as mesh_lib
from vrrl_jax.parallel import rules as rules_lib

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Experiment:
  config: ml_collections.ConfigDict
  model_config: Any  # the model family's config (vrrl_jax.models.families)
  model: Any  # its Linen model
  tokenizer: Any
  processor: processor_lib.ChatProcessor
  token_ids: tokenizer_lib.SpecialTokenIds
  mesh: jax.sharding.Mesh
  rules: tuple
  task: Any  # the task package config.task names (vrrl_jax.tasks.Task); None for pretraining


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """``get_config()`` of a config file plus ``--config.a.b=value`` overrides (Python literals, else strings), for
  tools that take ``--config path.py`` without absl flags. A bad override raises ValueError naming it."""
  import ast
  import importlib.util

  spec = importlib.util.spec_from_file_location(f"vrrl_config_{pathlib.Path(path).stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for override in overrides:
    if not override.startswith("--config.") or "=" not in override:
      raise ValueError(f"override {override!r}: expected --config.key=value")
    key, text = override[len("--config.") :].split("=", 1)
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *parents, leaf = key.split(".")
    section = config
    for name in parents:
      if name not in section:
        raise ValueError(f"override {override!r}: config has no section {name!r}")
      section = section[name]
    if leaf not in section:
      raise ValueError(f"override {override!r}: config has no field {key!r}")
    try:
      section[leaf] = value
    except (TypeError, ValueError) as e:
      raise ValueError(f"override {override!r}: {e}") from None
  return config


def _to_dict(value) -> dict:
  return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else dict(value)


def load_tokenizer(config) -> Any:
  from transformers import AutoTokenizer

  if config.get("tokenizer_dir"):
    return AutoTokenizer.from_pretrained(str(config.tokenizer_dir))
  if config.get("init_checkpoint") and _is_hf_dir(config.init_checkpoint):
    return AutoTokenizer.from_pretrained(str(config.init_checkpoint))
  if config.get("init_checkpoint"):
    raise ValueError(
      f"init_checkpoint {config.init_checkpoint} is not a Hugging Face directory, so it carries no "
      "tokenizer; set --config.tokenizer_dir to the original model directory"
    )
  return task_tokenizer.load_task_tokenizer()


def _is_hf_dir(path) -> bool:
  return (pathlib.Path(path) / "tokenizer_config.json").is_file()


def model_config_from(config, token_ids: tokenizer_lib.SpecialTokenIds):
  """The model's config: the checkpoint's config.json when ``init_checkpoint`` is set, else ``config.model`` (token
  ids filled in from the tokenizer). When both are set they must describe the same model: a config that says one
  architecture and loads another is refused, naming the fields that differ."""
  options = _to_dict(config.model_options)
  from_model = None
  if config.get("model") is not None:
    raw = _to_dict(config.model)
    raw["text_config"] = dict(raw["text_config"])
    if raw["text_config"].get("vocab_size") is None:
      raw["text_config"]["vocab_size"] = token_ids.vocab_size
    for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
      if raw.get(name) is None:
        raw[name] = getattr(token_ids, name)
    from_model = families.config_from_hf(raw, **options)
  if not config.get("init_checkpoint"):
    if from_model is None:
      raise ValueError("set config.model (a config.json-style dict) or config.init_checkpoint")
    return from_model
  path = pathlib.Path(config.init_checkpoint)
  hf_json = path / "config.json"
  ours_json = path / "vrrl_config.json"
  if hf_json.is_file():
    raw = json.loads(hf_json.read_text())
  elif ours_json.is_file():
    raw = json.loads(ours_json.read_text())["hf_config"]
  else:
    raise FileNotFoundError(f"init_checkpoint {path} has neither config.json (HF) nor vrrl_config.json (ours)")
  stored = families.config_from_hf(raw, **options)
  if from_model is not None and from_model != stored:
    diff = ", ".join(
      f"{name}: {a!r} in config.model, {b!r} in the checkpoint" for name, a, b in config_differences(from_model, stored)
    )
    raise ValueError(
      f"config.model and init_checkpoint {path} describe different models ({diff}); unset "
      f"config.model to take the checkpoint's, or init_checkpoint (--config.init_checkpoint=) to "
      f"train config.model from scratch"
    )
  return stored


def config_differences(a, b, prefix: str = "") -> list[tuple[str, Any, Any]]:
  """(dotted field name, value in a, value in b) for every field of two config dataclasses that differs."""
  out = []
  for field in dataclasses.fields(a):
    x, y = getattr(a, field.name), getattr(b, field.name)
    if dataclasses.is_dataclass(x) and dataclasses.is_dataclass(y):
      out += config_differences(x, y, f"{prefix}{field.name}.")
    elif x != y:
      out.append((prefix + field.name, x, y))
  return out


def image_config_from(config) -> processor_lib.ImageProcessorConfig:
  """The checkpoint's preprocessor_config.json, else the model family's hub defaults; ``config.image`` on top."""
  base = processor_lib.ImageProcessorConfig.qwen2_5_vl()
  if _model_type(config) == "qwen3_vl":
    base = processor_lib.ImageProcessorConfig.qwen3_vl()
  if config.get("init_checkpoint") and (pathlib.Path(config.init_checkpoint) / "preprocessor_config.json").is_file():
    base = processor_lib.ImageProcessorConfig.from_hf_dir(config.init_checkpoint)
  fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
  fields.update(_to_dict(config.image))
  return processor_lib.ImageProcessorConfig(**fields)


def check_token_ids(model_config, token_ids: tokenizer_lib.SpecialTokenIds) -> None:
  """The model's image/vision token ids and vocabulary must be the tokenizer's (a checkpoint's model and its
  tokenizer come together from init_checkpoint, or tokenizer_dir)."""
  for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
    ours, theirs = getattr(model_config, name), getattr(token_ids, name)
    if ours != theirs:
      raise ValueError(
        f"the model's {name} is {ours} but the tokenizer's is {theirs}: the model and the "
        "tokenizer do not belong together (set init_checkpoint to the model's checkpoint, whose "
        "tokenizer files come with it, or tokenizer_dir)"
      )
  if token_ids.vocab_size > model_config.text.vocab_size:
    raise ValueError(
      f"the tokenizer has {token_ids.vocab_size} tokens but the model's vocabulary only {model_config.text.vocab_size}"
    )


def chat_template_for(tokenizer, model_config) -> str | None:
  """The tokenizer's own chat template (a checkpoint's, as the Hugging Face processor uses it); without one, None
  (the bundled Qwen2.5-VL template) for Qwen2.5-VL, and an error for a family whose template differs."""
  if getattr(tokenizer, "chat_template", None):
    return tokenizer.chat_template
  if model_config.model_type != "qwen2_5_vl":
    raise ValueError(
      f"the tokenizer has no chat template, and {model_config.model_type}'s is not bundled; use the "
      "tokenizer of its checkpoint (its chat_template.jinja / tokenizer_config.json)"
    )
  return None


def _model_type(config) -> str | None:
  """config.json's model_type of ``init_checkpoint``, else ``config.model``'s."""
  if config.get("init_checkpoint"):
    path = pathlib.Path(config.init_checkpoint)
    if (path / "config.json").is_file():
      return json.loads((path / "config.json").read_text()).get("model_type")
    if (path / "vrrl_config.json").is_file():
      return json.loads((path / "vrrl_config.json").read_text())["hf_config"].get("model_type")
  return _to_dict(config.model).get("model_type") if config.get("model") is not None else None


def build(config: ml_collections.ConfigDict) -> Experiment:
  tokenizer = load_tokenizer(config)
  token_ids = tokenizer_lib.special_token_ids(tokenizer)
  image_config = image_config_from(config)
  model_config = model_config_from(config, token_ids)
  if model_config.max_frame_patches is None and "max_frame_patches" not in _to_dict(config.model_options):
    # The processor never makes a frame larger than max_pixels, so the vision tower may rely on it.
    model_config = dataclasses.replace(
      model_config, max_frame_patches=image_config.max_pixels // image_config.patch_size**2
    )
  check_token_ids(model_config, token_ids)
  vision = model_config.vision
  for ours, theirs in (
    ("patch_size", "patch_size"),
    ("merge_size", "spatial_merge_size"),
    ("temporal_patch_size", "temporal_patch_size"),
  ):
    if getattr(image_config, ours) != getattr(vision, theirs):
      raise ValueError(
        f"image processor {ours}={getattr(image_config, ours)} but the model's vision "
        f"{theirs}={getattr(vision, theirs)}"
      )
  processor = processor_lib.ChatProcessor(tokenizer, image_config, chat_template_for(tokenizer, model_config))
  mesh = mesh_lib.make_mesh(_to_dict(config.mesh))
  return Experiment(
    config=config,
    model_config=model_config,
    model=families.build(model_config),
    tokenizer=tokenizer,
    processor=processor,
    token_ids=token_ids,
    mesh=mesh,
    rules=rules_lib.DEFAULT_RULES,
    # Runs that play a task name it (run_config.validate requires config.task); pretraining plays none.
    task=tasks.load(config.task) if config.get("task") is not None else None,
  )


def initial_params(exp: Experiment, seed: int):
  """(params, logical specs): loaded from ``config.init_checkpoint`` onto the mesh, or random."""

  if exp.config.get("init_checkpoint"):
    from vrrl_jax.checkpoints.pretrained import from_pretrained

    options = _to_dict(exp.config.model_options)
    dtype, compute_dtype = options.pop("param_dtype", None), options.pop("dtype", None)
    _, params = from_pretrained(
      exp.config.init_checkpoint, dtype=dtype, compute_dtype=compute_dtype, mesh=exp.mesh, rules=exp.rules, **options
    )
    _, specs = families.abstract_params(exp.model_config)
    return params, specs
  return families.init_params(exp.model_config, jax.random.PRNGKey(seed))


def make_sampler(exp: Experiment, buckets):
  """The batched sampler with shape buckets ``buckets`` (``run_config.sampler_buckets(config)``)."""
  from vrrl_jax.sampling.sampler import Sampler

  return Sampler(exp.model_config, pad_token_id=exp.token_ids.pad_token_id, mesh=exp.mesh, buckets=buckets)


def setup_console() -> None:
  """The run's own INFO lines and only warnings from libraries: no TPU backend probe from jax, no transformers
  advice that PyTorch is absent (this package never uses it). Call before transformers is imported."""
  os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
  logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  logging.getLogger().setLevel(logging.WARNING)  # also when absl.app has put its own handler on the root logger
  logging.getLogger("vrrl_jax").setLevel(logging.INFO)


def enable_compilation_cache(path: str | None = None) -> str:
  """Persistent XLA compilation cache: a restarted (resumed) or repeated run skips recompiling its programs.

  Default ``$VRRL_JAX_CACHE`` or ``~/.cache/vrrl_jax/xla``.
  """
  path = path or os.environ.get("VRRL_JAX_CACHE") or str(pathlib.Path.home() / ".cache" / "vrrl_jax" / "xla")
  pathlib.Path(path).mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path


def host_rng(seed: int, *parts: int) -> np.random.Generator:
  """A numpy generator determined by (seed, parts): host randomness of a step never depends on history, so a
  resumed run draws what an uninterrupted one would."""
  return np.random.default_rng([seed, *parts])


def save_config(config, workdir: str | os.PathLike) -> None:
  path = pathlib.Path(workdir)
  path.mkdir(parents=True, exist_ok=True)
  (path / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
