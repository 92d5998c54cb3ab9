"""Our checkpoint format: the params pytree saved with orbax, plus a JSON file that says which model it is.

Layout of a checkpoint directory:
  vrrl_config.json   {"format", "format_version", "hf_config" (a transformers config.json dict),
                      "param_dtype", "scan_layers"}: enough to rebuild the model family's config and to export config.json
  params/            orbax StandardCheckpointer directory of the params pytree
  (tokenizer / processor files copied by the converter, if any)
The JSON is written after orbax commits, so a directory without it is an unfinished or foreign checkpoint.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import SingleDeviceSharding

from vrrl_jax.checkpoints import hf
from vrrl_jax.checkpoints.safetensors_io import CheckpointError, hf_config_dict
from vrrl_jax.models import families
from vrrl_jax.parallel import mesh as mesh_lib
from vrrl_jax.parallel import rules as rules_lib

CONFIG_FILE = "vrrl_config.json"
PARAMS_DIR = "params"
FORMAT = "vrrl_jax/vlm"
OLD_FORMATS = ("vrrl_jax/qwen2_5_vl",)  # read as FORMAT (written before Qwen3-VL)
FORMAT_VERSION = 1
_ORBAX_MARKERS = ("_CHECKPOINT_METADATA", "_METADATA", "manifest.ocdbt")


def is_orbax_dir(directory: str | os.PathLike) -> bool:
  """Whether `directory` holds orbax files (ours under params/, or a bare orbax checkpoint)."""
  return any(
    os.path.exists(os.path.join(directory, sub, marker)) for sub in ("", PARAMS_DIR) for marker in _ORBAX_MARKERS
  )


def flat_paths(tree) -> dict[tuple[str, ...], object]:
  """{("language_model", "embed_tokens"): leaf, ...} for a nested-dict pytree."""
  return {
    tuple(str(getattr(k, "key", k)) for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }


def check_tree(shapes: dict[tuple[str, ...], tuple[int, ...]], config, what: str) -> None:
  """Raises CheckpointError naming missing, unexpected and mis-shaped params (shapes: path -> shape)."""
  expected = {path: tuple(leaf.shape) for path, leaf in flat_paths(families.abstract_params(config)[0]).items()}
  problems = []
  if missing := sorted("/".join(p) for p in expected.keys() - shapes.keys()):
    problems.append(f"missing {missing[:8]}" + (f" ({len(missing)} in all)" if len(missing) > 8 else ""))
  if unexpected := sorted("/".join(p) for p in shapes.keys() - expected.keys()):
    problems.append(f"unexpected {unexpected[:8]}" + (f" ({len(unexpected)} in all)" if len(unexpected) > 8 else ""))
  for path in sorted(expected.keys() & shapes.keys()):
    if tuple(shapes[path]) != expected[path]:
      problems.append(f"{'/'.join(path)} has shape {tuple(shapes[path])}, expected {expected[path]}")
  if problems:
    raise CheckpointError(
      f"{what} does not match the Qwen2.5-VL config (scan_layers={config.scan_layers}): " + "; ".join(problems)
    )


def abstract_targets(config, mesh=None, rules=None):
  """ShapeDtypeStructs (param dtype, and sharding: the rules' on `mesh`, else the default device) per param."""
  shapes, specs = families.abstract_params(config)
  if mesh is None:
    device = SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, shapes)
  else:
    shardings = mesh_lib.param_shardings(specs, mesh, rules_lib.DEFAULT_RULES if rules is None else rules)
  targets = jax.tree.map(
    lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes, shardings
  )
  for path, target in flat_paths(targets).items():
    spec = getattr(target.sharding, "spec", ())
    for dim, axes in zip(target.shape, tuple(spec)):
      parts = int(np.prod([mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ())]))
      if dim % parts:
        raise ValueError(
          f"param {'/'.join(path)} of shape {target.shape} cannot be split evenly by its sharding "
          f"{spec} on mesh {dict(mesh.shape)}"
        )
  return targets


def _same_model(a, b) -> bool:
  fields = (
    "text",
    "vision",
    "image_token_id",
    "video_token_id",
    "vision_start_token_id",
    "vision_end_token_id",
    "tie_word_embeddings",
  )
  return type(a) is type(b) and all(getattr(a, f) == getattr(b, f) for f in fields)


def save(directory: str | os.PathLike, params, config, hf_config: dict | None = None) -> None:
  """Saves `params` (any placement) and the config. `hf_config`, the original config.json, is kept for export
  (it keeps fields we do not model, e.g. eos ids); without it one is generated from `config`."""
  directory = os.path.abspath(directory)
  if os.path.exists(os.path.join(directory, PARAMS_DIR)) or os.path.exists(os.path.join(directory, CONFIG_FILE)):
    raise CheckpointError(f"{directory} already holds a checkpoint; save to a new directory")
  check_tree({p: np.shape(v) for p, v in flat_paths(params).items()}, config, "params")
  if hf_config is None:
    hf_config = hf_config_dict(config)
  elif not _same_model(families.config_from_hf(hf_config), config):
    raise ValueError("hf_config describes a different model than config")
  os.makedirs(directory, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(directory, PARAMS_DIR), params)
    checkpointer.wait_until_finished()
  if jax.process_index() == 0:
    record = {
      "format": FORMAT,
      "format_version": FORMAT_VERSION,
      "hf_config": hf_config,
      "param_dtype": config.param_dtype,
      "scan_layers": config.scan_layers,
    }
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
      json.dump(record, f, indent=2, sort_keys=True)


def read_record(directory: str | os.PathLike) -> dict:
  """The parsed vrrl_config.json, checked for format and version."""
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isfile(path):
    if is_orbax_dir(directory):
      raise CheckpointError(
        f"{directory} holds an orbax checkpoint but no {CONFIG_FILE}: it was not written by "
        "vrrl_jax.checkpoints.orbax_io.save, or its save did not finish"
      )
    raise CheckpointError(f"{directory}: no {CONFIG_FILE}; not a vrrl_jax checkpoint")
  try:
    with open(path) as f:
      record = json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path}: not valid JSON ({e})") from e
  if not isinstance(record, dict) or record.get("format") not in (FORMAT, *OLD_FORMATS):
    raise CheckpointError(
      f"{path}: format is {record.get('format') if isinstance(record, dict) else None!r}, expected {FORMAT!r}"
    )
  if record.get("format_version") != FORMAT_VERSION:
    raise CheckpointError(f"{path}: format_version {record.get('format_version')!r}, this code reads {FORMAT_VERSION}")
  for key in ("hf_config", "param_dtype", "scan_layers"):
    if key not in record:
      raise CheckpointError(f"{path}: missing field {key!r}")
  if not os.path.isdir(os.path.join(directory, PARAMS_DIR)):
    raise CheckpointError(f"{directory}: {CONFIG_FILE} present but no {PARAMS_DIR}/ directory")
  return record


def saved_config(directory: str | os.PathLike):
  """The config the params were saved with (param dtype and layer layout included)."""
  record = read_record(directory)
  return families.config_from_hf(
    record["hf_config"], param_dtype=record["param_dtype"], scan_layers=bool(record["scan_layers"])
  )


def restore(directory: str | os.PathLike, config=None, mesh=None, rules=None):
  """Params for `config` (default: as saved), cast to its param dtype, placed straight onto `mesh` with the
  rules' shardings (or on the default device). A different scan_layers than saved is converted on the host."""
  directory = os.path.abspath(directory)
  stored = saved_config(directory)
  config = stored if config is None else config
  if not _same_model(config, stored):
    raise ValueError(f"{directory} holds a different model than the requested config")
  params_dir = os.path.join(directory, PARAMS_DIR)
  with ocp.StandardCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(params_dir).item_metadata
    if metadata is None:
      raise CheckpointError(f"{params_dir}: orbax could not read the checkpoint metadata")
    tree = getattr(metadata, "tree", metadata)
    check_tree({p: tuple(m.shape) for p, m in flat_paths(tree).items()}, stored, f"orbax checkpoint {params_dir}")
    targets = abstract_targets(config, mesh, rules)
    if config.scan_layers == stored.scan_layers:
      return checkpointer.restore(params_dir, targets)
    host_targets = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), families.abstract_params(stored)[0])
    host_params = checkpointer.restore(params_dir, host_targets)
  relaid = hf.params_from_state_dict(hf.state_dict_from_params(host_params, stored, layout="memory"), config)
  return jax.tree.map(lambda value, target: jax.device_put(value, target.sharding), relaid, targets)
