"""`from_pretrained`: a model (any family: Qwen2.5-VL, Qwen3-VL) and its params from a Hugging Face directory or a vrrl_jax (orbax) checkpoint.

From a Hugging Face directory every param is built with `jax.make_array_from_callback` for its sharding: each
device's callback reads only that device's block of the safetensors tensor(s) behind the param (rows / columns
through `get_slice`), transposes it to our layout and casts it. So no host ever holds a full copy per device, and
a model larger than one device's memory loads straight onto the mesh.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from vrrl_jax.checkpoints import hf
from vrrl_jax.checkpoints import orbax_io
from vrrl_jax.checkpoints import safetensors_io
from vrrl_jax.checkpoints.safetensors_io import CheckpointError
from vrrl_jax.models import families

HF, ORBAX = "hf", "orbax"
_LM_HEAD, _EMBED = "lm_head.weight", "model.language_model.embed_tokens.weight"


def checkpoint_kind(path: str | os.PathLike) -> str:
  """ "hf" (config.json + safetensors) or "orbax" (ours: vrrl_config.json + params/); raises for anything else."""
  path = str(path)
  if not os.path.isdir(path):
    raise CheckpointError(f"{path}: not a directory")
  ours = os.path.isfile(os.path.join(path, orbax_io.CONFIG_FILE))
  theirs = os.path.isfile(os.path.join(path, safetensors_io.CONFIG_FILE))
  if ours and theirs:
    raise CheckpointError(
      f"{path} holds both {orbax_io.CONFIG_FILE} and {safetensors_io.CONFIG_FILE}; "
      "keep vrrl_jax checkpoints and Hugging Face exports in separate directories"
    )
  if ours:
    return ORBAX
  if theirs:
    return HF
  if orbax_io.is_orbax_dir(path):
    orbax_io.read_record(path)  # raises its clear error
  listing = sorted(os.listdir(path))
  if any(name.endswith(".safetensors") for name in listing):
    raise CheckpointError(
      f"{path} holds safetensors files but no {safetensors_io.CONFIG_FILE}; a Hugging Face "
      "checkpoint needs its config.json"
    )
  raise CheckpointError(
    f"{path} is neither a Hugging Face checkpoint ({safetensors_io.CONFIG_FILE} + *.safetensors) nor a vrrl_jax "
    f"checkpoint ({orbax_io.CONFIG_FILE} + {orbax_io.PARAMS_DIR}/); it holds {listing[:10]}"
  )


def dtype_name(dtype) -> str:
  """ "float32" / "bfloat16" from a string or a numpy / jax dtype."""
  try:
    name = jnp.dtype(dtype).name
  except TypeError as e:
    raise ValueError(f"unknown dtype {dtype!r}") from e
  if name not in safetensors_io.NUMPY_DTYPES:
    raise ValueError(f"params dtype must be one of {sorted(safetensors_io.NUMPY_DTYPES)}, got {name!r}")
  return name


def hf_dtype(hf_config: dict) -> str:
  """The dtype a config.json declares (`dtype`, or `torch_dtype` before transformers 5); float32 if none."""
  declared = hf_config.get("dtype") or hf_config.get("torch_dtype") or "float32"
  if declared not in safetensors_io.NUMPY_DTYPES:
    raise ValueError(f"checkpoint dtype {declared!r} is not supported here; pass dtype='float32' or 'bfloat16'")
  return declared


def config_from_hf(hf_config: dict, **options):
  """The family config of a checkpoint's config.json (its model_type picks the family, and is required)."""
  if "model_type" not in hf_config:
    raise CheckpointError(f"config.json has no model_type; expected one of {list(families.MODEL_TYPES)}")
  try:
    families.family(hf_config["model_type"])
  except ValueError as e:
    raise CheckpointError(f"config.json: {e}") from None
  return families.config_from_hf(hf_config, **options)


def from_pretrained(
  path: str | os.PathLike, dtype=None, mesh=None, rules=None, compute_dtype=None, progress: bool = True, **options
) -> tuple[object, dict]:
  """(model, params) from a Hugging Face directory or a vrrl_jax checkpoint.

  dtype: params dtype; default the checkpoint's own (config.json `dtype`, or the saved param dtype).
  compute_dtype: activation dtype; default `dtype`. mesh / rules: place params straight onto the mesh with
  the rules' shardings (default rules: parallel.rules.DEFAULT_RULES); without a mesh, on the default device.
  options: other config run options (scan_layers, remat_policy, precision, attention_impl).
  """
  for reserved in ("param_dtype", "dtype"):
    if reserved in options:
      raise TypeError(f"pass the params dtype as dtype= and the activation dtype as compute_dtype=, not {reserved}=")
  path = os.path.abspath(str(path))
  kind = checkpoint_kind(path)
  if kind == ORBAX:
    stored = orbax_io.saved_config(path)
    options.setdefault("scan_layers", stored.scan_layers)
    name = stored.param_dtype if dtype is None else dtype_name(dtype)
    config = families.config_from_hf(
      orbax_io.read_record(path)["hf_config"],
      param_dtype=name,
      dtype=name if compute_dtype is None else dtype_name(compute_dtype),
      **options,
    )
    params = orbax_io.restore(path, config, mesh=mesh, rules=rules)
  else:
    hf_config = safetensors_io.read_config(path)
    name = hf_dtype(hf_config) if dtype is None else dtype_name(dtype)
    config = config_from_hf(
      hf_config, param_dtype=name, dtype=name if compute_dtype is None else dtype_name(compute_dtype), **options
    )
    with safetensors_io.SafetensorsCheckpoint(path) as checkpoint:
      params = load_hf_params(checkpoint, config, mesh=mesh, rules=rules, progress=progress)
  return families.build(config), params


def check_hf_tensors(checkpoint: safetensors_io.SafetensorsCheckpoint, config) -> dict[str, str]:
  """In-memory name -> stored name for every tensor the config needs; raises CheckpointError naming missing,
  unexpected and mis-shaped tensors (from the headers alone, nothing is read) and a tied lm_head that differs."""
  stored = {}
  for key in checkpoint:
    name = hf.canonical_key(key)
    if name in stored:
      raise CheckpointError(
        f"{checkpoint.directory} holds {name!r} twice, as {stored[name]!r} and {key!r} (both key layouts)"
      )
    stored[name] = key
  if config.tie_word_embeddings and _LM_HEAD in stored and _EMBED in stored:
    # Some exports write the tied head anyway; it is only acceptable if it is the embedding.
    if not np.array_equal(checkpoint[stored[_LM_HEAD]], checkpoint[stored[_EMBED]]):
      raise CheckpointError(
        f"{checkpoint.directory}: config ties word embeddings but {_LM_HEAD} differs from the token embedding"
      )
    del stored[_LM_HEAD]
  entries = hf.checkpoint_entries(config)
  expected = {e.hf_key: e.hf_shape for e in entries}
  problems = []
  if missing := sorted(expected.keys() - stored.keys()):
    hint = " (config.json says tie_word_embeddings=false)" if missing == [_LM_HEAD] else ""
    problems.append(f"missing {missing[:8]}" + (f" ({len(missing)} in all)" if len(missing) > 8 else "") + hint)
  if unexpected := sorted(stored[k] for k in stored.keys() - expected.keys()):
    problems.append(f"unexpected {unexpected[:8]}" + (f" ({len(unexpected)} in all)" if len(unexpected) > 8 else ""))
  for name in sorted(expected.keys() & stored.keys()):
    shape = checkpoint.shape(stored[name])
    if shape != expected[name]:
      problems.append(f"{stored[name]} has shape {shape}, expected {expected[name]}")
  if problems:
    raise CheckpointError(f"{checkpoint.directory} does not match its config.json: " + "; ".join(problems))
  return {name: stored[name] for name in expected}


def load_hf_params(
  checkpoint: safetensors_io.SafetensorsCheckpoint, config, mesh=None, rules=None, progress: bool = True
):
  """Params pytree of jax.Arrays built block by block from the safetensors (see the module docstring)."""
  stored_name = check_hf_tensors(checkpoint, config)
  targets = orbax_io.abstract_targets(config, mesh, rules)
  entries_of = {}
  for entry in hf.checkpoint_entries(config):
    entries_of.setdefault(entry.path, []).append(entry)
  flat_targets = orbax_io.flat_paths(targets)
  arrays = []
  for path, target in tqdm(
    flat_targets.items(), desc=f"Loading {os.path.basename(checkpoint.directory)}", unit="param", disable=not progress
  ):
    entries = sorted(entries_of[path], key=lambda e: -1 if e.layer is None else e.layer)
    np_dtype = np.dtype(target.dtype)

    def read(index, entries=entries, np_dtype=np_dtype):
      if entries[0].layer is None:
        block = entry_block(entries[0], checkpoint.get_slice(stored_name[entries[0].hf_key]), index)
      else:  # stacked layers: axis 0 is the layer
        start, stop = _bounds(index[0], len(entries))
        block = np.stack(
          [entry_block(e, checkpoint.get_slice(stored_name[e.hf_key]), index[1:]) for e in entries[start:stop]]
        )
      return block.astype(np_dtype)

    arrays.append(jax.make_array_from_callback(target.shape, target.sharding, read, dtype=target.dtype))
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(targets), arrays)


def _bounds(index: slice, size: int) -> tuple[int, int]:
  start, stop, step = index.indices(size)
  if step != 1:
    raise ValueError(f"strided shard index {index} is not supported")
  return start, stop


def _flat_positions(bounds, shape) -> np.ndarray:
  """Row-major positions, in an array of `shape`, of the block given by per-dim (start, stop); 1-D, ascending."""
  grids = np.meshgrid(*[np.arange(a, b) for a, b in bounds], indexing="ij")
  return np.ravel_multi_index(tuple(grids), tuple(shape)).reshape(-1)


def entry_block(entry: hf.Entry, view, index) -> np.ndarray:
  """Block `index` (slices over entry.shape) of our array for `entry`, reading only the rows / columns of the
  transformers tensor `view` (a safetensors slice, or any array) that it needs.

  Ours is `hf.reshape(out, in).T.reshape(entry.shape)` for linear and conv weights and `hf.reshape(entry.shape)`
  for the rest, so our leading dims flatten to hf's input axis and our trailing dims to its output axis.
  """
  bounds = [_bounds(s, n) for s, n in zip(index, entry.shape)]
  block_shape = tuple(b - a for a, b in bounds)
  if entry.kind == "copy":
    if entry.hf_shape == entry.shape:
      return np.asarray(view[tuple(slice(a, b) for a, b in bounds)])
    if len(entry.hf_shape) != 1:
      raise ValueError(f"{entry.hf_key}: cannot map a {entry.hf_shape} tensor onto {entry.shape}")
    flat = _flat_positions(bounds, entry.shape)
    return np.asarray(view[int(flat[0]) : int(flat[-1]) + 1])[flat - flat[0]].reshape(block_shape)
  n_out, n_in = entry.hf_shape[0], int(np.prod(entry.hf_shape[1:]))
  split = next(
    (k for k in range(1, len(entry.shape)) if np.prod(entry.shape[:k]) == n_in and np.prod(entry.shape[k:]) == n_out),
    None,
  )
  if split is None:
    raise ValueError(f"{entry.hf_key}: our shape {entry.shape} does not split into in={n_in} x out={n_out}")
  in_flat = _flat_positions(bounds[:split], entry.shape[:split])
  out_flat = _flat_positions(bounds[split:], entry.shape[split:])
  out_lo, out_hi = int(out_flat[0]), int(out_flat[-1]) + 1
  if entry.kind == "linear":
    in_lo, in_hi = int(in_flat[0]), int(in_flat[-1]) + 1
    rows = np.asarray(view[out_lo:out_hi, in_lo:in_hi])
  elif entry.kind == "conv":  # (out, C, T, P, P): whole rows, the patch axes are small
    in_lo = 0
    rows = np.asarray(view[out_lo:out_hi]).reshape(out_hi - out_lo, n_in)
  else:
    raise ValueError(f"{entry.hf_key}: unknown conversion kind {entry.kind!r}")
  return rows[np.ix_(out_flat - out_lo, in_flat - in_lo)].T.reshape(block_shape)
