"""Run logging: per-step scalars to JSONL, TensorBoard and a one-line console summary.

Files under ``workdir``:

- ``metrics.jsonl``: one JSON object per ``write`` call, ``{"step": int, "wall_time": float, key: value,
  ...}`` in the order given. Non-finite values are written as ``null`` so every line is strict JSON.
  The file is the run's record, made resume-safe: a writer opened with ``resume_step=s`` (the step of
  the restored checkpoint) first drops every line with ``step > s`` -- the steps the interrupted run
  logged after its last checkpoint, which the resumed run logs again -- so after the resumed run the
  file holds the same lines as an uninterrupted run (wall times aside). ``resume_step=None`` is a fresh
  run: a stale file left in ``workdir`` is emptied. A final line without its newline (a crash while
  writing) is dropped too; any other unreadable line raises.
- ``tb/``: TensorBoard event files (tensorboardX). A resumed writer records TensorBoard's purge marker
  at ``resume_step + 1``, so TensorBoard hides the interrupted run's events from that step on.

Only process 0 of a multi-host job writes anything; on the others the writer is inert.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import pathlib
import time
import uuid
from typing import Any, Callable, Mapping, Sequence

import numpy as np

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tb"
RESERVED_KEYS = ("step", "wall_time")


def _as_scalar(key: str, value: Any) -> int | float:
  """A Python int or float from a number, numpy scalar or 0-d (numpy/jax) array; anything else raises."""
  if isinstance(value, (bool, np.bool_)):
    return int(value)
  if isinstance(value, numbers.Integral):
    return int(value)
  if isinstance(value, numbers.Real):
    return float(value)
  if isinstance(value, (str, bytes)) or not hasattr(value, "__array__"):
    raise ValueError(f"metric {key!r} must be a number or a 0-d array, got {type(value).__name__}")
  array = np.asarray(value)
  if array.ndim != 0:
    raise ValueError(f"metric {key!r} must be a scalar, got an array of shape {array.shape}")
  if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer):
    return int(array)
  if array.dtype.kind in "OSUMmc":  # objects, strings, dates, complex: not a real scalar
    raise ValueError(f"metric {key!r} has non-real dtype {array.dtype}")
  try:  # floating types, numpy's and ml_dtypes' (bfloat16, float8...)
    return float(array.astype(np.float64))
  except (TypeError, ValueError):
    raise ValueError(f"metric {key!r} has non-numeric dtype {array.dtype}") from None


def _check_step(step: Any) -> int:
  if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Integral) or step < 0:
    raise ValueError(f"step must be an int >= 0, got {step!r}")
  return int(step)


def format_value(value: int | float) -> str:
  """Console format: ints as is; floats with 4 decimals in [1e-3, 1e4), else 3-digit scientific."""
  if isinstance(value, int):
    return str(value)
  if not math.isfinite(value):
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
  if value == 0.0 or 1e-3 <= abs(value) < 1e4:
    return f"{value:.4f}"
  return f"{value:.3e}"


def format_console_line(step: int, scalars: Mapping[str, int | float], keys: Sequence[str] | None) -> str:
  """``step 12 | loss=0.1234 reward=0.5000``: the chosen keys present at this step, in the chosen order."""
  keys = list(scalars) if keys is None else [k for k in keys if k in scalars]
  return f"step {step} | " + " ".join(f"{k}={format_value(scalars[k])}" for k in keys)


def _print_line(line: str) -> None:
  print(line, flush=True)


def _read_lines(path: pathlib.Path) -> list[tuple[str, dict[str, Any]]]:
  """(raw line, record) pairs; a last line without its newline (interrupted write) is left out."""
  text = path.read_text(encoding="utf-8")
  lines = text.split("\n")
  lines.pop()  # after the final newline: "" for a complete file, else the interrupted line
  out = []
  for number, line in enumerate(lines, start=1):
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}:{number} is not a JSON line: {e}") from None
    if not isinstance(record, dict) or isinstance(record.get("step"), bool) or not isinstance(record.get("step"), int):
      raise ValueError(f"{path}:{number} is not a metrics record with an int 'step': {line[:200]!r}")
    out.append((line, record))
  return out


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
  """The records of a ``metrics.jsonl`` (or of ``workdir/metrics.jsonl`` given a directory), ``null``
  values as None."""
  path = pathlib.Path(path)
  if path.is_dir():
    path = path / METRICS_FILE
  if not path.is_file():
    raise FileNotFoundError(f"no metrics file at {path}")
  return [record for _, record in _read_lines(path)]


class MetricsWriter:
  """Writes each step's scalars to ``workdir/metrics.jsonl``, ``workdir/tb`` and the console.

  ``resume_step``: the checkpoint step a resumed run restarts from (None for a fresh run); later
  ``write`` calls need ``step > resume_step`` and steps that never go down. ``console_keys``: the keys
  of the console line (None: all); ``console``: where the line goes (None: no console line).
  ``process_index``: this host's index (None: ``jax.process_index()``); only 0 writes.
  ``redo_at_resume``: key prefixes of records *at* ``resume_step`` that the resumed run writes again (the eval
  between SFT and RL runs after the checkpoint of the last SFT step): those records are dropped and the step may be
  written once more.
  """

  def __init__(
    self,
    workdir: str | os.PathLike,
    *,
    resume_step: int | None = None,
    console_keys: Sequence[str] | None = None,
    console: Callable[[str], None] | None = _print_line,
    tensorboard: bool = True,
    process_index: int | None = None,
    flush_secs: int = 30,
    redo_at_resume: Sequence[str] = (),
  ):
    if resume_step is not None:
      resume_step = _check_step(resume_step)
    if console_keys is not None:
      if isinstance(console_keys, str):
        raise ValueError("console_keys must be a sequence of keys, not one string")
      console_keys = [str(k) for k in console_keys]
    if process_index is None:
      import jax  # lazily: a reader or a test of the files needs no jax

      process_index = jax.process_index()
    self.workdir = pathlib.Path(workdir)
    self.path = self.workdir / METRICS_FILE
    self.resume_step = resume_step
    self.console_keys = console_keys
    self.console = console
    self.active = process_index == 0
    redo = tuple(redo_at_resume) if resume_step is not None else ()
    self._min_step = 0 if resume_step is None else resume_step + (0 if redo else 1)
    self._file = None
    self._tb = None
    self._closed = False
    if not self.active:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    self._drop_lines_after(-1 if resume_step is None else resume_step, redo)
    self._file = open(self.path, "a", encoding="utf-8")
    if tensorboard:
      from tensorboardX import SummaryWriter  # lazily: slow to import

      # A unique suffix: tensorboardX names files by the second, and a quick restart must not
      # overwrite the earlier file.
      self._tb = SummaryWriter(
        str(self.workdir / TENSORBOARD_DIR),
        purge_step=0 if resume_step is None else resume_step + 1,
        flush_secs=flush_secs,
        filename_suffix=f".{uuid.uuid4().hex[:8]}",
      )

  def _drop_lines_after(self, keep_up_to: int, redo: tuple[str, ...] = ()) -> None:
    if not self.path.exists():
      return

    def redone(record) -> bool:
      keys = [k for k in record if k not in RESERVED_KEYS]
      return bool(redo) and record["step"] == keep_up_to and bool(keys) and all(k.startswith(redo) for k in keys)

    kept = [line for line, record in _read_lines(self.path) if record["step"] <= keep_up_to and not redone(record)]
    tmp = self.path.with_name(self.path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, self.path)  # atomic: a crash here leaves the old or the new file, never half

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Logs one step's scalars (numbers, numpy scalars, 0-d numpy/jax arrays)."""
    if self._closed:
      raise RuntimeError("MetricsWriter is closed")
    step = _check_step(step)
    if not isinstance(scalars, Mapping):
      raise ValueError(f"scalars must be a mapping of name -> number, got {type(scalars).__name__}")
    values: dict[str, int | float] = {}
    for key, value in scalars.items():
      if not isinstance(key, str) or not key:
        raise ValueError(f"metric names must be non-empty strings, got {key!r}")
      if key in RESERVED_KEYS:
        raise ValueError(f"metric name {key!r} is reserved for the record's own fields {RESERVED_KEYS}")
      values[key] = _as_scalar(key, value)
    if not self.active:
      return
    if step < self._min_step:
      raise ValueError(
        f"step {step} comes before step {self._min_step} (steps never go down, and a run "
        f"resumed at {self.resume_step} logs steps after it)"
      )
    self._min_step = step
    record = {"step": step, "wall_time": time.time()}
    record.update({k: (v if isinstance(v, int) or math.isfinite(v) else None) for k, v in values.items()})
    self._file.write(json.dumps(record, allow_nan=False) + "\n")
    self._file.flush()
    if self._tb is not None:
      for key, value in values.items():
        self._tb.add_scalar(key, value, global_step=step, walltime=record["wall_time"])
    shown = values if self.console_keys is None else [k for k in self.console_keys if k in values]
    if self.console is not None and shown:  # a record with none of the console keys (an eval's) prints nothing
      self.console(format_console_line(step, values, self.console_keys))

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()
      os.fsync(self._file.fileno())
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._closed:
      return
    self.flush()
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()
    self._closed = True

  def __enter__(self) -> "MetricsWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
