"""Device mesh (data, fsdp, tensor) and placing parameters on it from their logical axis names."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from vrrl_jax.models.kv_cache import KVCache
from vrrl_jax.parallel import host as host_lib
from vrrl_jax.parallel import rules as rules_lib

MESH_AXES = ("data", "fsdp", "tensor")


def make_mesh(mesh_config: Mapping, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Mesh over `devices` (default: all) from sizes {"data", "fsdp", "tensor"}; one size may be -1 (the rest)."""
  devices = list(jax.devices() if devices is None else devices)
  unknown = set(mesh_config) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"unknown mesh axes {sorted(unknown)}; expected {MESH_AXES}")
  sizes = [int(mesh_config.get(axis, 1)) for axis in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices cannot be split into {dict(zip(MESH_AXES, sizes))}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, have {len(devices)}")
  device_grid = mesh_utils.create_device_mesh(sizes, devices)
  return Mesh(device_grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def _check_rules(mesh: Mesh, rules) -> None:
  missing = rules_lib.mesh_axes_used(rules) - set(mesh.axis_names)
  if missing:
    raise ValueError(f"rules refer to mesh axes {sorted(missing)} that the mesh {mesh.axis_names} lacks")


def param_shardings(logical_specs, mesh: Mesh, rules=rules_lib.DEFAULT_RULES):
  """NamedShardings for a tree of logical PartitionSpecs (from init_params / abstract_params)."""
  _check_rules(mesh, rules)
  return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def shard_params(params, logical_specs, mesh: Mesh, rules=rules_lib.DEFAULT_RULES):
  """Places params (host or device arrays) on the mesh; a dimension not divisible by its mesh axes raises."""
  shardings = param_shardings(logical_specs, mesh, rules)
  for path, (leaf, sharding) in _zip_leaves(params, shardings):
    for dim, axes in zip(np.shape(leaf), tuple(sharding.spec) + (None,) * np.ndim(leaf)):
      parts = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ()))
      if dim % parts:
        raise ValueError(f"param {path} dim {dim} is not divisible by its {parts} shards ({sharding.spec})")
  return host_lib.tree_to_global(params, shardings)


def data_sharding(mesh: Mesh, rules=rules_lib.DEFAULT_RULES, ndim: int = 2, batch_axis: int = 0) -> NamedSharding:
  """Sharding of a batch-major array: `batch_axis` over the rules' activation_batch axes, the rest replicated."""
  _check_rules(mesh, rules)
  spec = [None] * ndim
  spec[batch_axis] = nn.logical_to_mesh_axes(("activation_batch",), rules)[0]
  return NamedSharding(mesh, PartitionSpec(*spec))


def cache_shardings(mesh: Mesh, rules=rules_lib.DEFAULT_RULES) -> KVCache:
  """Shardings of a KVCache: batch over the batch axes, kv heads over tensor."""
  _check_rules(mesh, rules)
  kv = nn.logical_to_mesh_sharding(
    PartitionSpec(None, "cache_batch", "cache_length", "cache_kv_heads", "cache_head_dim"), mesh, rules
  )
  rows = nn.logical_to_mesh_sharding(PartitionSpec("cache_batch", "cache_length"), mesh, rules)
  lengths = nn.logical_to_mesh_sharding(PartitionSpec("cache_batch"), mesh, rules)
  return KVCache(key=kv, value=kv, segment_ids=rows, lengths=lengths)


def _zip_leaves(params, shardings):
  leaves = jax.tree_util.tree_leaves_with_path(params)
  sharding_leaves = jax.tree_util.tree_leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
  if len(leaves) != len(sharding_leaves):
    raise ValueError(f"params have {len(leaves)} leaves but the specs describe {len(sharding_leaves)}")
  return [(jax.tree_util.keystr(p), (leaf, s)) for (p, leaf), s in zip(leaves, sharding_leaves)]
