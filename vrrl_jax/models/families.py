"""A model family is the module (or package) ``vrrl_jax.models.<model_type>``, picked by config.json's
``model_type`` with importlib, big_vision style. Everything outside ``vrrl_jax.models`` reaches a model through
these functions and the family's small surface, never through a concrete class:

- ``Config`` (``Config.from_hf(dict, **run_options)``, ``config.to_hf()``, ``config.model_type``, ``.text``,
  ``.vision``, the special token ids and run options);
- ``Model`` (a Linen module with ``forward(inputs, cache, return_logits)``, ``lm_logits(hidden)`` and
  ``encode_images(vision)``, called through ``apply(..., method="forward")``);
- ``prepare_inputs``, ``init_cache``, ``init_params``, ``abstract_params``.
"""

from __future__ import annotations

import importlib
import re
import types
from typing import Any

MODEL_TYPES = ("qwen2_5_vl", "qwen3_vl")  # the families this version has, for error messages
_SURFACE = ("Config", "Model", "prepare_inputs", "init_cache", "init_params", "abstract_params")


def family(model_type: str) -> types.ModuleType:
  """The family module of ``model_type`` (e.g. "qwen3_vl")."""
  if not isinstance(model_type, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", model_type):
    raise ValueError(f"model_type {model_type!r} is not a model family name; known: {list(MODEL_TYPES)}")
  if model_type.endswith("_moe"):
    raise ValueError(
      f"model_type {model_type!r}: mixture-of-experts variants are not supported (dense models only: "
      f"{list(MODEL_TYPES)})"
    )
  try:
    module = importlib.import_module(f"vrrl_jax.models.{model_type}")
  except ModuleNotFoundError as e:
    if e.name != f"vrrl_jax.models.{model_type}":
      raise
    raise ValueError(f"unknown model_type {model_type!r}; this version supports {list(MODEL_TYPES)}") from None
  missing = [name for name in _SURFACE if not hasattr(module, name)]
  if missing:
    raise ValueError(f"vrrl_jax.models.{model_type} is not a model family (it lacks {missing})")
  return module


def config_from_hf(raw: dict, **options) -> Any:
  """The family config of a config.json dict (``model_type`` required)."""
  if not isinstance(raw, dict) or "model_type" not in raw:
    raise ValueError(f"config has no model_type; expected one of {list(MODEL_TYPES)}")
  return family(raw["model_type"]).Config.from_hf(raw, **options)


def of(config) -> types.ModuleType:
  """The family of a config object."""
  return family(config.model_type)


def build(config):
  """The family's Linen model for ``config``."""
  return of(config).Model(config)


def prepare_inputs(config, *args, **kwargs):
  return of(config).prepare_inputs(config, *args, **kwargs)


def init_cache(config, batch: int, max_len: int):
  return of(config).init_cache(config, batch, max_len)


def init_params(config, rng):
  return of(config).init_params(config, rng)


def abstract_params(config):
  return of(config).abstract_params(config)
