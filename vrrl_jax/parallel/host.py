"""Host numpy arrays in and out of global ``jax.Array``s, the same code for one process or many.

Multi-host rule (issue: "host work is replicated deterministically or owned by one process"): every process runs
the same host work (data, rendering, rollouts' episodes, rewards, the replay buffer) from the same seeds, so each
holds the *whole* host batch. Going in, ``to_global`` builds the global array from the slices this process's devices
own (``jax.make_array_from_callback``: no transfer between hosts); with one process it is ``jax.device_put``. Coming
out, ``to_host`` gathers a sharded array onto every process (``process_allgather``), so the host work that follows
sees the same numbers everywhere; replicated and single-process arrays are read directly.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


def to_global(value, sharding) -> Any:
  """A host array (or scalar) as a global array with ``sharding``; None passes through. A ``jax.Array`` with one
  process, or one already spanning the processes, is resharded (``device_put``); a process-local one (an RNG key)
  is rebuilt from its host copy, which every process holds the same."""
  if value is None:
    return value
  if jax.process_count() == 1 or (isinstance(value, jax.Array) and not value.is_fully_addressable):
    return jax.device_put(value, sharding)
  if isinstance(value, jax.Array):
    if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(to_global(np.asarray(jax.random.key_data(value)), sharding))
  host = np.asarray(value)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def tree_to_global(tree, shardings) -> Any:
  """``to_global`` over a tree, ``shardings`` being a prefix of it as ``jax.jit``'s ``in_shardings`` are (one
  sharding may cover a whole subtree; a None value stays None)."""

  def put(sharding, value):
    if sharding is None:
      return value
    return jax.tree.map(lambda leaf: to_global(leaf, sharding), value)

  return jax.tree.map(put, shardings, tree, is_leaf=lambda x: x is None)


def to_host(value) -> np.ndarray:
  """The whole value of an array on every process, as numpy."""
  if not isinstance(value, jax.Array):
    return np.asarray(value)
  if value.is_fully_addressable or value.is_fully_replicated:
    return np.asarray(value)
  return np.asarray(multihost_utils.process_allgather(value, tiled=True))


def tree_to_host(tree) -> Any:
  return jax.tree.map(to_host, tree)


def with_global_inputs(fn, in_shardings):
  """``fn`` (jitted with ``in_shardings``) taking host arrays from every process: each argument is made global with
  its sharding first."""

  def call(*args):
    return fn(*(tree_to_global(a, s) for a, s in zip(args, in_shardings)))

  return call
