"""Training checkpoints: the train state, the replay buffer and the run's host position, saved together.

One orbax ``CheckpointManager`` step directory holds three items:

- ``state``: the ``TrainState`` pytree (step, policy and reference params, optimizer state, RNG key), restored
  straight into the shardings of an abstract target;
- ``buffer``: ``PrefixBuffer.state_dict()`` (numpy arrays and scalars, its RNG included);
- ``host``: JSON with everything else a resumed run needs to continue identically (phase, data position,
  counters).

Saves are asynchronous: orbax writes into a temporary directory and renames it when complete, so a process
killed mid-save leaves no step directory that looks finished. A step directory that exists but cannot be read
(truncated, corrupted, edited) is reported with its path and the reason, and the previous good step is used.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
  """No usable checkpoint (every candidate failed to restore)."""


class TrainCheckpointer:
  """Save every ``save_every`` steps, keep the newest ``keep``; restore the newest readable one."""

  def __init__(self, directory: str | pathlib.Path, *, save_every: int, keep: int, async_save: bool = True):
    if save_every <= 0 or keep <= 0:
      raise ValueError(f"save_every and keep must be positive, got save_every={save_every}, keep={keep}")
    self.directory = pathlib.Path(directory).absolute()
    self.save_every = save_every
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        save_interval_steps=1,
        enable_async_checkpointing=async_save,
        create=True,
        cleanup_tmp_directories=True,
      ),
      item_names=("state", "buffer", "host"),
    )

  def should_save(self, step: int, *, last: bool = False) -> bool:
    return last or step % self.save_every == 0

  def save(self, step: int, state: Any, buffer_state: dict, host: dict, *, force: bool = False) -> bool:
    """Starts an (async) save of ``step``; returns False when the step is already saved."""
    if step in self._manager.all_steps():
      return False
    return self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        buffer=ocp.args.StandardSave(_nonempty(buffer_state)),
        host=ocp.args.JsonSave(host),
      ),
      force=force,
    )

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore_latest(self, abstract_state: Any, step: int | None = None) -> tuple[int, Any, dict, dict] | None:
    """(step, state, buffer_state, host) of the newest readable checkpoint, None if there is none; with ``step``,
    that checkpoint only (an error if it is not there).

    ``abstract_state`` is a pytree of ``jax.ShapeDtypeStruct`` with shardings (``jax.eval_shape`` of the
    state creation, with ``.sharding`` set) so arrays come back already placed on the mesh; or a callable
    ``host -> abstract_state`` when the state's structure depends on the saved host record (e.g. the phase).
    """
    steps = self.steps()
    if step is not None:
      if step not in steps:
        raise CheckpointError(f"no checkpoint of step {step} in {self.directory} (steps there: {steps})")
      steps = [step]
    if not steps:
      return None
    errors = []
    for candidate in reversed(steps):
      try:
        if callable(abstract_state):
          host = self._manager.restore(candidate, args=ocp.args.Composite(host=ocp.args.JsonRestore())).host
          target = abstract_state(dict(host))
        else:
          target = abstract_state
        restored = self._manager.restore(
          candidate,
          args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target),
            buffer=ocp.args.StandardRestore(),
            host=ocp.args.JsonRestore(),
          ),
        )
        _check_restored_state(restored.state, target, candidate)
      except Exception as e:  # orbax raises many types for unreadable files; report and fall back
        msg = f"checkpoint step {candidate} in {self.directory} is unreadable ({type(e).__name__}: {e})"
        log.error("%s; falling back to an earlier checkpoint", msg)
        errors.append(msg)
        continue
      buffer_state = jax.tree.map(np.asarray, restored.buffer)
      if set(buffer_state) == set(_NO_BUFFER):
        buffer_state = {}
      return candidate, restored.state, buffer_state, dict(restored.host)
    raise CheckpointError("no readable checkpoint:\n  " + "\n  ".join(errors))


# A run without a replay buffer (pretraining, SFT-only tools) saves this in its place: orbax refuses an empty tree.
_NO_BUFFER = {"no_buffer": np.zeros((), np.int8)}


def _nonempty(tree: dict) -> dict:
  """orbax refuses zero-size arrays; the buffer's state_dict never has them, but say so clearly if it does."""
  if not tree:
    return _NO_BUFFER
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(leaf, np.ndarray) and leaf.size == 0:
      raise ValueError(f"buffer state has a zero-size array at {jax.tree_util.keystr(path)}; orbax cannot save it")
  return tree


def _check_restored_state(state: Any, abstract_state: Any, step: int) -> None:
  got = jax.tree.structure(state)
  want = jax.tree.structure(abstract_state)
  if got != want:
    raise ValueError(f"step {step}: restored state tree does not match the model/optimizer of this run")
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(abstract_state)):
    if a.shape != b.shape:
      raise ValueError(f"step {step}: restored array of shape {a.shape} where this run expects {b.shape}")
