"""The VRRL release's FrozenLake map files, as shipped inside the package or from a directory the user names.

The package carries the two files the runs read (``assets/frozenlake``: gzip of the published bytes, the upstream
paths, licence and attribution in ``SOURCE.md``, and the SHA-256 of each published file in ``SHA256SUMS``), so a
fresh install needs nothing beside it. Every read of the packaged copy is checked against ``SHA256SUMS``: a
damaged install is named, never trained on. A user directory (``data_dir``) holds the same file names as
published (plain ``.json``; a ``.json.gz`` beside is read too) and is taken as it is.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pathlib
from typing import Any

PACKAGED_DIR = pathlib.Path(__file__).resolve().parents[2] / "assets" / "frozenlake"
EVAL_FILE = "eval_L3-L6.json"  # upstream data/FrozenLake/eval_data/eval_data.json: 1,000 maps, 250 per level 3..6
TRAIN_FILE = "rl_maps.json"  # upstream data/FrozenLake/rl_train/rl_3k/maps.json: 3,000 training maps
FILES = (EVAL_FILE, TRAIN_FILE)
CHECKSUM_FILE = "SHA256SUMS"


class ReleaseDataError(ValueError):
  """A map file is missing, damaged or not the JSON list it should be."""


def packaged_checksums() -> dict[str, str]:
  """``{file name: sha256 of the published bytes}`` from ``SHA256SUMS`` (``sha256sum`` format)."""
  path = PACKAGED_DIR / CHECKSUM_FILE
  if not path.is_file():
    raise ReleaseDataError(f"{path} is missing: the package was installed without its data files")
  sums = {}
  for line in path.read_text(encoding="utf-8").splitlines():
    if line.strip():
      digest, name = line.split(maxsplit=1)
      sums[name.strip()] = digest
  return sums


def _packaged_bytes(name: str) -> bytes:
  path = PACKAGED_DIR / f"{name}.gz"
  if not path.is_file():
    raise ReleaseDataError(f"packaged map file {path} is missing: the package was installed without its data")
  raw = gzip.decompress(path.read_bytes())
  want = packaged_checksums().get(name)
  got = hashlib.sha256(raw).hexdigest()
  if want != got:
    raise ReleaseDataError(f"packaged map file {path} is damaged: sha256 {got}, {CHECKSUM_FILE} says {want}")
  return raw


def _user_path(name: str, data_dir: str | os.PathLike) -> pathlib.Path:
  for path in (pathlib.Path(data_dir) / name, pathlib.Path(data_dir) / f"{name}.gz"):
    if path.is_file():
      return path
  raise ReleaseDataError(
    f"data_dir {data_dir}: no {name} (or {name}.gz); it must hold {', '.join(FILES)} "
    "as the VRRL release publishes them, or leave data_dir unset for the packaged copy"
  )


def _user_bytes(name: str, data_dir: str | os.PathLike) -> bytes:
  path = _user_path(name, data_dir)
  return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def check_data_dir(data_dir: str | os.PathLike | None) -> None:
  """Fails now, naming the file, if ``data_dir`` lacks one of the release's files (None: the packaged copy)."""
  if data_dir is None:
    return
  if not pathlib.Path(data_dir).is_dir():
    raise ReleaseDataError(f"data_dir {data_dir} is not a directory")
  for name in FILES:
    _user_path(name, data_dir)


def read_maps(name: str, data_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
  """The JSON list of maps in release file ``name``: from ``data_dir``, or the packaged copy when None."""
  if name not in FILES:
    raise ReleaseDataError(f"unknown release file {name!r}; files are {FILES}")
  raw = _packaged_bytes(name) if data_dir is None else _user_bytes(name, data_dir)
  where = f"packaged {name}" if data_dir is None else str(pathlib.Path(data_dir) / name)
  try:
    entries = json.loads(raw)
  except json.JSONDecodeError as e:
    raise ReleaseDataError(f"{where} is not valid JSON: {e}") from None
  if not isinstance(entries, list):
    raise ReleaseDataError(f"{where}: expected a JSON list of maps, got {type(entries).__name__}")
  return entries
