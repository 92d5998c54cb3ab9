"""Hugging Face safetensors directories: lazy reading and writing.

Reading accepts what the Hub and `save_pretrained` produce: config.json plus `model.safetensors`, or shards listed
in `model.safetensors.index.json`; key names are left as stored (either layout; `hf.canonical_key` maps them).
Writing produces a directory `Qwen2_5_VLForConditionalGeneration.from_pretrained` (and so vLLM) loads: the
on-disk key layout, a tied lm_head left out, `dtype` / `torch_dtype` in config.json, shards plus an index when
the tensors exceed `max_shard_size`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping

import ml_dtypes  # registers bfloat16 with numpy, so safetensors' numpy backend can read BF16 tensors
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file


CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
NUMPY_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
_FLOAT_CODES = ("F64", "F32", "F16", "BF16")
_SIZE_UNITS = {
  "B": 1,
  "KB": 10**3,
  "MB": 10**6,
  "GB": 10**9,
  "TB": 10**12,
  "KIB": 2**10,
  "MIB": 2**20,
  "GIB": 2**30,
  "TIB": 2**40,
}


class CheckpointError(ValueError):
  """A checkpoint directory that is missing, malformed or does not match its config."""


def read_config(directory: str | os.PathLike) -> dict:
  """config.json of an HF directory as a dict."""
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isfile(path):
    raise CheckpointError(f"{directory}: no {CONFIG_FILE}; a Hugging Face checkpoint directory needs one")
  try:
    with open(path) as f:
      raw = json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path}: not valid JSON ({e})") from e
  if not isinstance(raw, dict):
    raise CheckpointError(f"{path}: expected a JSON object, got {type(raw).__name__}")
  return raw


def safetensors_files(directory: str | os.PathLike) -> dict[str, str]:
  """Tensor name -> file (relative to `directory`), from the index if there is one, else `model.safetensors`."""
  index_path = os.path.join(directory, INDEX_FILE)
  if os.path.isfile(index_path):
    try:
      with open(index_path) as f:
        weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise CheckpointError(f"{index_path}: not a safetensors index with a weight_map ({e!r})") from e
    missing_files = sorted({name for name in weight_map.values() if not os.path.isfile(os.path.join(directory, name))})
    if missing_files:
      raise CheckpointError(f"{index_path} lists shard files that are not in the directory: {missing_files}")
    return dict(weight_map)
  if os.path.isfile(os.path.join(directory, SINGLE_FILE)):
    return {}  # filled in by SafetensorsCheckpoint from the file's own header
  others = sorted(n for n in os.listdir(directory) if n.endswith((".safetensors", ".bin", ".pt", ".pth")))
  raise CheckpointError(
    f"{directory}: neither {SINGLE_FILE} nor {INDEX_FILE}"
    + (f" (found {others}; only safetensors with the standard names are read)" if others else "")
  )


class SafetensorsCheckpoint(Mapping):
  """The tensors of one HF directory as a read-only mapping; a tensor is read from disk only when asked for,
  whole (`[key]`) or in part (`get_slice(key)[...]`). Keep it open while reading (context manager)."""

  def __init__(self, directory: str | os.PathLike):
    self.directory = str(directory)
    weight_map = safetensors_files(directory)
    file_names = sorted(set(weight_map.values())) if weight_map else [SINGLE_FILE]
    self._handles = {}
    self._file_of = {}
    try:
      for name in file_names:
        path = os.path.join(directory, name)
        try:
          handle = safe_open(path, framework="np")
        except (SafetensorError, OSError) as e:
          raise CheckpointError(f"{path}: unreadable safetensors file, truncated or corrupt ({e})") from e
        self._handles[name] = handle
        for key in handle.keys():
          if key in self._file_of:
            raise CheckpointError(f"{directory}: tensor {key!r} is in both {self._file_of[key]} and {name}")
          self._file_of[key] = name
      if weight_map:
        listed_absent = sorted(k for k, name in weight_map.items() if self._file_of.get(k) != name)
        unlisted = sorted(set(self._file_of) - set(weight_map))
        if listed_absent or unlisted:
          raise CheckpointError(
            f"{directory}: {INDEX_FILE} disagrees with the shard files; listed but not in their file: "
            f"{listed_absent[:8]}; in a file but not listed: {unlisted[:8]}"
          )
    except BaseException:
      self.close()
      raise

  def close(self) -> None:
    for handle in self._handles.values():
      handle.__exit__(None, None, None)
    self._handles = {}

  def __enter__(self) -> SafetensorsCheckpoint:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __iter__(self) -> Iterator[str]:
    return iter(self._file_of)

  def __len__(self) -> int:
    return len(self._file_of)

  def __contains__(self, key) -> bool:
    return key in self._file_of

  def _handle(self, key: str):
    if key not in self._file_of:
      raise KeyError(f"{self.directory}: no tensor {key!r}")
    if not self._handles:
      raise CheckpointError(f"{self.directory}: checkpoint is closed")
    return self._handles[self._file_of[key]]

  def shape(self, key: str) -> tuple[int, ...]:
    return tuple(self._handle(key).get_slice(key).get_shape())

  def dtype_code(self, key: str) -> str:
    """The safetensors dtype code ("F32", "BF16", ...)."""
    return self._handle(key).get_slice(key).get_dtype()

  def get_slice(self, key: str):
    """Sliceable view (`view[a:b, c:d]` reads only that block); raises for non-float tensors."""
    code = self.dtype_code(key)
    if code not in _FLOAT_CODES:
      raise CheckpointError(f"{self.directory}: tensor {key!r} has dtype {code}; expected one of {_FLOAT_CODES}")
    return self._handle(key).get_slice(key)

  def __getitem__(self, key: str) -> np.ndarray:
    return self.get_slice(key)[:]


def read_state_dict(directory: str | os.PathLike) -> dict[str, np.ndarray]:
  """Every tensor of an HF directory, read eagerly (small models, tests); names as stored."""
  with SafetensorsCheckpoint(directory) as checkpoint:
    return {key: checkpoint[key] for key in checkpoint}


def hf_config_dict(config) -> dict:
  """config.json (transformers 5 `save_pretrained` format) for a config that has none, e.g. a fresh init."""
  return config.to_hf()


def parse_size(size: int | str) -> int:
  """Bytes from an int or a string like "5GB" (10^9) or "2GiB" (2^30), as transformers reads max_shard_size."""
  if isinstance(size, int):
    value = size
  else:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)?\s*", str(size).upper())
    if not match:
      raise ValueError(f"cannot read a size from {size!r}; use e.g. 5GB, 500MB or a number of bytes")
    value = int(float(match.group(1)) * _SIZE_UNITS[match.group(2) or "B"])
  if value <= 0:
    raise ValueError(f"size must be positive, got {size!r}")
  return value


def write_checkpoint(
  directory: str | os.PathLike,
  state_dict: Mapping[str, np.ndarray],
  hf_config: Mapping,
  dtype: str,
  max_shard_size: int | str = "5GB",
) -> list[str]:
  """Writes config.json and the tensors (cast to `dtype`) as one file or shards with an index; returns the
  file names written. Tensors are grouped in name order, a new shard starting when one would pass the size."""
  if dtype not in NUMPY_DTYPES:
    raise ValueError(f"dtype must be one of {sorted(NUMPY_DTYPES)}, got {dtype!r}")
  limit = parse_size(max_shard_size)
  os.makedirs(directory, exist_ok=True)
  stale = [n for n in os.listdir(directory) if n.endswith(".safetensors") or n == INDEX_FILE]
  if stale:
    raise CheckpointError(f"{directory} already holds safetensors files {sorted(stale)[:4]}; write to a new directory")
  np_dtype = NUMPY_DTYPES[dtype]

  shards, current, current_size = [], [], 0
  for key in sorted(state_dict):
    size = int(np.prod(np.shape(state_dict[key]))) * np_dtype.itemsize
    if current and current_size + size > limit:
      shards.append(current)
      current, current_size = [], 0
    current.append(key)
    current_size += size
  if current:
    shards.append(current)

  names = (
    [SINGLE_FILE]
    if len(shards) == 1
    else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
  )
  weight_map, total_size, total_parameters = {}, 0, 0
  for name, keys in zip(names, shards):
    tensors = {k: np.ascontiguousarray(np.asarray(state_dict[k]).astype(np_dtype)) for k in keys}
    save_file(tensors, os.path.join(directory, name), metadata={"format": "pt"})
    for key, tensor in tensors.items():
      weight_map[key] = name
      total_size += tensor.nbytes
      total_parameters += tensor.size
  written = list(names)
  if len(names) > 1:
    index = {
      "metadata": {"total_parameters": total_parameters, "total_size": total_size},
      "weight_map": dict(sorted(weight_map.items())),
    }
    with open(os.path.join(directory, INDEX_FILE), "w") as f:
      json.dump(index, f, indent=2)
    written.append(INDEX_FILE)

  config_out = dict(hf_config)
  config_out["dtype"] = dtype
  config_out["torch_dtype"] = dtype  # transformers 4.x (and tools built on it) read this name
  with open(os.path.join(directory, CONFIG_FILE), "w") as f:
    json.dump(config_out, f, indent=2, sort_keys=True)
  written.append(CONFIG_FILE)
  return written
