"""transformers state_dict <-> our params for Qwen2.5-VL and Qwen3-VL.

One table (`checkpoint_entries`) lists every tensor: its transformers name (in-memory layout), our param path,
both shapes and how to convert. Both state_dict layouts are read: the in-memory one
(`model.visual.*`, `model.language_model.*`, `lm_head.weight`) and the on-disk / Hub one (`visual.*`, `model.*`,
`lm_head.weight`). Linear weights (out, in) become kernels (in, out) reshaped to our per-head layout; the Conv3d
patch weight becomes a (C*T*P*P, hidden) kernel; per-layer tensors are stacked when `config.scan_layers`.
A tied lm_head is not a separate tensor here and is left out on disk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from vrrl_jax.models.config import Qwen25VLConfig
from vrrl_jax.models.qwen3_vl.config import Qwen3VLConfig

_VISUAL, _TEXT = "model.visual.", "model.language_model."
_LM_HEAD = "lm_head.weight"


@dataclasses.dataclass(frozen=True)
class Entry:
  hf_key: str  # in-memory layout
  path: tuple[str, ...]  # our param path (the stacked leaf when layer is not None and layers are scanned)
  kind: str  # "copy" (reshape only), "linear" (transpose (out, in)), "conv" (Conv3d patch embedding)
  hf_shape: tuple[int, ...]
  shape: tuple[int, ...]  # ours, for one layer
  layer: int | None = None  # index along the stacked axis when scanned


def checkpoint_entries(config: Qwen25VLConfig | Qwen3VLConfig) -> list[Entry]:
  """Every tensor of the model ``config`` describes (its family's table)."""
  if isinstance(config, Qwen3VLConfig):
    return qwen3_vl_entries(config)
  return qwen2_5_vl_entries(config)


class _Table:
  """Collects entries; per-layer paths follow ``scan_layers`` (one stacked leaf, or ``group_i``)."""

  def __init__(self, scan_layers: bool):
    self.entries, self.scan_layers = [], scan_layers

  def add(self, hf_key, path, kind, hf_shape, shape, layer=None):
    self.entries.append(Entry(hf_key, tuple(path), kind, tuple(hf_shape), tuple(shape), layer))

  def linear(self, hf_prefix, path, in_shape, out_shape, bias, layer=None):
    in_size, out_size = int(np.prod(in_shape)), int(np.prod(out_shape))
    self.add(hf_prefix + ".weight", path + ("kernel",), "linear", (out_size, in_size), in_shape + out_shape, layer)
    if bias:
      self.add(hf_prefix + ".bias", path + ("bias",), "copy", (out_size,), out_shape, layer)

  def norm(self, hf_prefix, path, size, bias, layer=None):
    self.add(hf_prefix + ".weight", path + ("scale",), "copy", (size,), (size,), layer)
    if bias:
      self.add(hf_prefix + ".bias", path + ("bias",), "copy", (size,), (size,), layer)

  def layer_path(self, group, i, inner=()):
    return (group,) + tuple(inner) if self.scan_layers else (f"{group}_{i}",)

  def done(self) -> list[Entry]:
    if not self.scan_layers:
      return [dataclasses.replace(e, layer=None) for e in self.entries]
    return self.entries


def qwen3_vl_entries(config: Qwen3VLConfig) -> list[Entry]:
  text, vision = config.text, config.vision
  d, hd, heads, kv = text.hidden_size, text.head_dim, text.num_attention_heads, text.num_key_value_heads
  dv, hv, hdv, iv = vision.hidden_size, vision.num_heads, vision.head_dim, vision.intermediate_size
  merged = dv * vision.merge_unit
  t = _Table(config.scan_layers)
  t.add(
    _VISUAL + "patch_embed.proj.weight",
    ("visual", "patch_embed", "kernel"),
    "conv",
    (dv, vision.in_channels, vision.temporal_patch_size, vision.patch_size, vision.patch_size),
    (vision.patch_dim, dv),
  )
  t.add(_VISUAL + "patch_embed.proj.bias", ("visual", "patch_embed", "bias"), "copy", (dv,), (dv,))
  t.add(
    _VISUAL + "pos_embed.weight",
    ("visual", "pos_embed"),
    "copy",
    (vision.num_position_embeddings, dv),
    (vision.num_position_embeddings, dv),
  )
  for i in range(vision.depth):
    hf, ours = f"{_VISUAL}blocks.{i}.", ("visual",) + t.layer_path("blocks", i, ("block",))
    t.norm(hf + "norm1", ours + ("norm1",), dv, True, i)
    t.norm(hf + "norm2", ours + ("norm2",), dv, True, i)
    t.linear(hf + "attn.qkv", ours + ("attn", "qkv"), (dv,), (3, hv, hdv), True, i)
    t.linear(hf + "attn.proj", ours + ("attn", "proj"), (hv, hdv), (dv,), True, i)
    t.linear(hf + "mlp.linear_fc1", ours + ("linear_fc1",), (dv,), (iv,), True, i)
    t.linear(hf + "mlp.linear_fc2", ours + ("linear_fc2",), (iv,), (dv,), True, i)
  mergers = [("merger", ("merger",), dv)] + [
    (f"deepstack_merger_list.{j}", (f"deepstack_merger_list_{j}",), merged)
    for j in range(len(vision.deepstack_visual_indexes))
  ]
  for hf_name, ours, norm_size in mergers:
    t.norm(f"{_VISUAL}{hf_name}.norm", ("visual",) + ours + ("norm",), norm_size, True)
    t.linear(f"{_VISUAL}{hf_name}.linear_fc1", ("visual",) + ours + ("linear_fc1",), (merged,), (merged,), True)
    t.linear(
      f"{_VISUAL}{hf_name}.linear_fc2", ("visual",) + ours + ("linear_fc2",), (merged,), (vision.out_hidden_size,), True
    )

  t.add(
    _TEXT + "embed_tokens.weight",
    ("language_model", "embed_tokens"),
    "copy",
    (text.vocab_size, d),
    (text.vocab_size, d),
  )
  for i in range(text.num_hidden_layers):
    hf, ours = f"{_TEXT}layers.{i}.", ("language_model",) + t.layer_path("layers", i)
    t.norm(hf + "input_layernorm", ours + ("input_layernorm",), d, False, i)
    t.norm(hf + "post_attention_layernorm", ours + ("post_attention_layernorm",), d, False, i)
    t.linear(hf + "self_attn.q_proj", ours + ("self_attn", "q_proj"), (d,), (heads, hd), False, i)
    t.linear(hf + "self_attn.k_proj", ours + ("self_attn", "k_proj"), (d,), (kv, hd), False, i)
    t.linear(hf + "self_attn.v_proj", ours + ("self_attn", "v_proj"), (d,), (kv, hd), False, i)
    t.linear(hf + "self_attn.o_proj", ours + ("self_attn", "o_proj"), (heads, hd), (d,), False, i)
    t.norm(hf + "self_attn.q_norm", ours + ("self_attn", "q_norm"), hd, False, i)
    t.norm(hf + "self_attn.k_norm", ours + ("self_attn", "k_norm"), hd, False, i)
    for name, shape_in, shape_out in (
      ("gate_proj", d, text.intermediate_size),
      ("up_proj", d, text.intermediate_size),
      ("down_proj", text.intermediate_size, d),
    ):
      t.linear(hf + f"mlp.{name}", ours + ("mlp", name), (shape_in,), (shape_out,), False, i)
  t.add(_TEXT + "norm.weight", ("language_model", "norm", "scale"), "copy", (d,), (d,))
  if not config.tie_word_embeddings:
    t.add(_LM_HEAD, ("language_model", "lm_head"), "linear", (text.vocab_size, d), (d, text.vocab_size))
  return t.done()


def qwen2_5_vl_entries(config: Qwen25VLConfig) -> list[Entry]:
  text, vision = config.text, config.vision
  d, hd, heads, kv = text.hidden_size, text.head_dim, text.num_attention_heads, text.num_key_value_heads
  dv, hv, hdv, iv = vision.hidden_size, vision.num_heads, vision.head_dim, vision.intermediate_size
  merged = dv * vision.merge_unit
  entries = []

  def add(hf_key, path, kind, hf_shape, shape, layer=None):
    entries.append(Entry(hf_key, tuple(path), kind, tuple(hf_shape), tuple(shape), layer))

  def linear(hf_prefix, path, in_shape, out_shape, bias, layer=None):
    in_size, out_size = int(np.prod(in_shape)), int(np.prod(out_shape))
    add(hf_prefix + ".weight", path + ("kernel",), "linear", (out_size, in_size), in_shape + out_shape, layer)
    if bias:
      add(hf_prefix + ".bias", path + ("bias",), "copy", (out_size,), out_shape, layer)

  def layer_path(group, i):
    return (group,) if config.scan_layers else (f"{group}_{i}",)

  add(
    _VISUAL + "patch_embed.proj.weight",
    ("visual", "patch_embed", "kernel"),
    "conv",
    (dv, vision.in_channels, vision.temporal_patch_size, vision.patch_size, vision.patch_size),
    (vision.patch_dim, dv),
  )
  for i in range(vision.depth):
    hf, ours = f"{_VISUAL}blocks.{i}.", ("visual",) + layer_path("blocks", i)
    add(hf + "norm1.weight", ours + ("norm1", "scale"), "copy", (dv,), (dv,), i)
    add(hf + "norm2.weight", ours + ("norm2", "scale"), "copy", (dv,), (dv,), i)
    linear(hf + "attn.qkv", ours + ("attn", "qkv"), (dv,), (3, hv, hdv), True, i)
    linear(hf + "attn.proj", ours + ("attn", "proj"), (hv, hdv), (dv,), True, i)
    for name, shape_in, shape_out in (("gate_proj", dv, iv), ("up_proj", dv, iv), ("down_proj", iv, dv)):
      linear(hf + f"mlp.{name}", ours + ("mlp", name), (shape_in,), (shape_out,), True, i)
  add(_VISUAL + "merger.ln_q.weight", ("visual", "merger", "ln_q", "scale"), "copy", (dv,), (dv,))
  linear(_VISUAL + "merger.mlp.0", ("visual", "merger", "mlp_0"), (merged,), (merged,), True)
  linear(_VISUAL + "merger.mlp.2", ("visual", "merger", "mlp_2"), (merged,), (vision.out_hidden_size,), True)

  add(
    _TEXT + "embed_tokens.weight",
    ("language_model", "embed_tokens"),
    "copy",
    (text.vocab_size, d),
    (text.vocab_size, d),
  )
  for i in range(text.num_hidden_layers):
    hf, ours = f"{_TEXT}layers.{i}.", ("language_model",) + layer_path("layers", i)
    add(hf + "input_layernorm.weight", ours + ("input_layernorm", "scale"), "copy", (d,), (d,), i)
    add(hf + "post_attention_layernorm.weight", ours + ("post_attention_layernorm", "scale"), "copy", (d,), (d,), i)
    linear(hf + "self_attn.q_proj", ours + ("self_attn", "q_proj"), (d,), (heads, hd), True, i)
    linear(hf + "self_attn.k_proj", ours + ("self_attn", "k_proj"), (d,), (kv, hd), True, i)
    linear(hf + "self_attn.v_proj", ours + ("self_attn", "v_proj"), (d,), (kv, hd), True, i)
    linear(hf + "self_attn.o_proj", ours + ("self_attn", "o_proj"), (heads, hd), (d,), False, i)
    for name, shape_in, shape_out in (
      ("gate_proj", d, text.intermediate_size),
      ("up_proj", d, text.intermediate_size),
      ("down_proj", text.intermediate_size, d),
    ):
      linear(hf + f"mlp.{name}", ours + ("mlp", name), (shape_in,), (shape_out,), False, i)
  add(_TEXT + "norm.weight", ("language_model", "norm", "scale"), "copy", (d,), (d,))
  if not config.tie_word_embeddings:
    add(_LM_HEAD, ("language_model", "lm_head"), "linear", (text.vocab_size, d), (d, text.vocab_size))
  if not config.scan_layers:
    entries = [dataclasses.replace(e, layer=None) for e in entries]
  return entries


def canonical_key(key: str) -> str:
  """In-memory name for a key of either layout."""
  if key.startswith((_VISUAL, _TEXT)) or key == _LM_HEAD:
    return key
  if key.startswith("visual."):
    return "model." + key
  if key.startswith("model."):
    return _TEXT + key[len("model.") :]
  return key


def disk_key(key: str) -> str:
  """On-disk (Hub, save_pretrained) name for an in-memory key."""
  if key.startswith(_VISUAL):
    return key[len("model.") :]
  if key.startswith(_TEXT):
    return "model." + key[len(_TEXT) :]
  return key


def _to_numpy(value) -> np.ndarray:
  if hasattr(value, "detach"):  # torch tensor; numpy has no bfloat16, so widen it
    value = value.detach().cpu()
    if str(value.dtype) == "torch.bfloat16":
      value = value.float()
    return value.numpy()
  return np.asarray(value)


def _to_ours(entry: Entry, array: np.ndarray) -> np.ndarray:
  if entry.kind == "linear":
    array = array.T
  elif entry.kind == "conv":
    array = array.reshape(array.shape[0], -1).T
  return array.reshape(entry.shape)


def _to_hf(entry: Entry, array: np.ndarray) -> np.ndarray:
  if entry.kind == "linear":
    return array.reshape(entry.hf_shape[1], entry.hf_shape[0]).T
  if entry.kind == "conv":
    return array.T.reshape(entry.hf_shape)
  return array.reshape(entry.hf_shape)


def _list_problem(what: str, keys) -> str:
  keys = sorted(keys)
  shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
  return f"{what}: {shown}"


def params_from_state_dict(state_dict: Mapping, config: Qwen25VLConfig) -> dict:
  """Our params (nested dict of numpy arrays in config.param_dtype) from a transformers state_dict of either layout.

  Raises ValueError on missing, unexpected or mis-shaped tensors.
  """
  canonical = {}
  for key, value in state_dict.items():
    name = canonical_key(key)
    if name in canonical:
      raise ValueError(f"state_dict holds {name!r} twice (both the in-memory and the on-disk layout)")
    canonical[name] = value
  entries = checkpoint_entries(config)
  if config.tie_word_embeddings and _LM_HEAD in canonical:
    # In memory transformers lists the tied lm_head under its own name; it must be the embedding itself.
    lm_head = _to_numpy(canonical.pop(_LM_HEAD))
    embed = _to_numpy(canonical.get(_TEXT + "embed_tokens.weight"))
    if embed.shape != lm_head.shape or not np.array_equal(embed, lm_head):
      raise ValueError("config ties word embeddings but lm_head.weight differs from embed_tokens.weight")
  expected = {e.hf_key for e in entries}
  problems = []
  if missing := expected - canonical.keys():
    problems.append(_list_problem("missing", missing))
  if unexpected := canonical.keys() - expected:
    problems.append(_list_problem("unexpected", unexpected))
  arrays = {}
  for entry in entries:
    if entry.hf_key not in canonical:
      continue
    array = _to_numpy(canonical[entry.hf_key])
    if array.shape != entry.hf_shape:
      problems.append(f"{entry.hf_key}: shape {array.shape}, expected {entry.hf_shape}")
      continue
    arrays[entry] = _to_ours(entry, array).astype(config.weight_dtype)
  if problems:
    raise ValueError(f"state_dict does not match the {_family(config)} config; " + "; ".join(problems))

  params, stacks = {}, {}
  for entry, array in arrays.items():
    if entry.layer is None:
      _set(params, entry.path, array)
    else:
      stacks.setdefault(entry.path, {})[entry.layer] = array
  for path, layers in stacks.items():
    _set(params, path, np.stack([layers[i] for i in range(len(layers))]))
  return params


def state_dict_from_params(params: Mapping, config: Qwen25VLConfig, layout: str = "disk") -> dict[str, np.ndarray]:
  """transformers state_dict (numpy) from our params; layout "disk" (Hub / save_pretrained names) or "memory"
  (the same for Qwen3-VL)."""
  if layout not in ("disk", "memory"):
    raise ValueError(f"layout must be 'disk' or 'memory', got {layout!r}")
  entries = checkpoint_entries(config)
  flat = _flatten(params)
  expected = {e.path for e in entries}
  problems = []
  if missing := expected - flat.keys():
    problems.append(_list_problem("missing", ["/".join(p) for p in missing]))
  if unexpected := flat.keys() - expected:
    problems.append(_list_problem("unexpected", ["/".join(p) for p in unexpected]))
  state_dict = {}
  for entry in entries:
    if entry.path not in flat:
      continue
    array = np.asarray(flat[entry.path])
    shape = entry.shape if entry.layer is None else (_stacked_length(config, entry),) + entry.shape
    if array.shape != shape:
      problems.append(f"{'/'.join(entry.path)}: shape {array.shape}, expected {shape}")
      continue
    if entry.layer is not None:
      array = array[entry.layer]
    # transformers 5 writes Qwen3-VL under its in-memory names, Qwen2.5-VL under the Hub's older ones.
    key = entry.hf_key if layout == "memory" or isinstance(config, Qwen3VLConfig) else disk_key(entry.hf_key)
    state_dict[key] = _to_hf(entry, array)
  if problems:
    raise ValueError(f"params do not match the {_family(config)} config; " + "; ".join(problems))
  return state_dict


def _family(config) -> str:
  return "Qwen3-VL" if isinstance(config, Qwen3VLConfig) else "Qwen2.5-VL"


def _stacked_length(config: Qwen25VLConfig, entry: Entry) -> int:
  return config.vision.depth if entry.path[0] == "visual" else config.text.num_hidden_layers


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
  flat = {}
  for name, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, prefix + (name,)))
    else:
      flat[prefix + (name,)] = value
  return flat
