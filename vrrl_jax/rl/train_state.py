"""The train state of RL and SFT: one pytree with everything an update changes, placed on the mesh by the
logical-axis rules, and the optimizer that updates it (VRRL_SPEC section 4, step 7: AdamW lr 5e-7, weight decay
0.01, grad-norm clip 1.0).

The optimizer state takes the shardings of the parameters it mirrors (Adam's mu / nu are split exactly like the
params, over fsdp and tensor); its scalars (counts) are replicated.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vrrl_jax.parallel import host as host_lib
from vrrl_jax.parallel import mesh as mesh_lib
from vrrl_jax.parallel import rules as rules_lib


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW as torch.optim.AdamW (decoupled weight decay on every parameter, as upstream's FSDP actor), after
  clipping the global gradient norm. Released: lr 5e-7, betas (0.9, 0.999), weight decay 0.01, clip 1.0, constant
  schedule. ``warmup_steps`` > 0 ramps the lr linearly from 0 over that many applied updates, then holds it (the
  first update uses lr 0, as torch's constant-with-warmup schedule). ``decay_steps`` > 0 then decays it along a
  cosine to 0 at update ``decay_steps`` (warmup included; transformers' ``get_cosine_schedule_with_warmup``).

  ``frozen``: parameter subtrees, as "/"-joined path prefixes ("visual", "visual/merger"), that never change: no
  update, no weight decay (their Adam moments are kept but stay zero), and left out of the clipped gradient norm.
  A from-scratch vision tower must be frozen for a tiny model to read the map at all (trained, it collapses to a
  constant: BENCHMARKS.md).

  ``lr_scale``: (path prefix, factor) pairs; the update of a matching subtree is multiplied by its factor after
  AdamW, which is a torch param group with lr x factor (decoupled weight decay scales with the lr there too). A
  from-scratch vision tower pretrained at 0.1x keeps its tokens' spread (at the full lr they collapse).
  """

  learning_rate: float = 5e-7
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 0.01
  max_grad_norm: float = 1.0
  warmup_steps: int = 0
  decay_steps: int = 0
  frozen: tuple[str, ...] = ()
  lr_scale: tuple[tuple[str, float], ...] = ()

  def __post_init__(self):
    for name in ("learning_rate", "b1", "b2", "eps", "weight_decay", "max_grad_norm"):
      value = getattr(self, name)
      if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(float(value))
      ):
        raise ValueError(f"OptimizerConfig.{name} must be a finite number, got {value!r}")
    if self.learning_rate < 0:
      raise ValueError(f"OptimizerConfig.learning_rate must be >= 0, got {self.learning_rate}")
    for name in ("b1", "b2"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"OptimizerConfig.{name} must be in [0, 1), got {getattr(self, name)}")
    if self.eps <= 0 or self.max_grad_norm <= 0 or self.weight_decay < 0:
      raise ValueError(
        f"OptimizerConfig needs eps > 0, max_grad_norm > 0, weight_decay >= 0; got eps={self.eps}, "
        f"max_grad_norm={self.max_grad_norm}, weight_decay={self.weight_decay}"
      )
    warmup = self.warmup_steps
    if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or warmup < 0:
      raise ValueError(f"OptimizerConfig.warmup_steps must be an integer >= 0, got {warmup!r}")
    decay = self.decay_steps
    if isinstance(decay, bool) or not isinstance(decay, (int, np.integer)) or decay < 0 or 0 < decay <= warmup:
      raise ValueError(
        f"OptimizerConfig.decay_steps must be 0 (no decay) or an integer > warmup_steps={warmup}, got {decay!r}"
      )
    if isinstance(self.frozen, str) or not all(isinstance(p, str) and p.strip("/") for p in self.frozen):
      raise ValueError(
        f"OptimizerConfig.frozen must be a tuple of parameter path prefixes such as ('visual',), got {self.frozen!r}"
      )
    for pair in self.lr_scale:
      ok = isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str) and pair[0].strip("/")
      factor = pair[1] if ok else None
      if (
        not ok
        or isinstance(factor, bool)
        or not isinstance(factor, (int, float))
        or not math.isfinite(factor)
        or factor < 0
      ):
        raise ValueError(
          f"OptimizerConfig.lr_scale must be (path prefix, factor >= 0) pairs such as "
          f"(('visual', 0.1),), got {self.lr_scale!r}"
        )


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
  """lr as a function of the number of applied (not skipped) updates."""
  if config.decay_steps:
    return optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, config.warmup_steps, config.decay_steps)
  if config.warmup_steps == 0:
    return optax.constant_schedule(config.learning_rate)
  return optax.join_schedules(
    [
      optax.linear_schedule(0.0, config.learning_rate, config.warmup_steps),
      optax.constant_schedule(config.learning_rate),
    ],
    [config.warmup_steps],
  )


def param_path(path) -> str:
  """ "visual/merger/mlp_0/kernel" for a tree_util key path."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def subtree_labels(params, prefixes: Sequence[str], what: str = "optimizer.frozen"):
  """Per leaf of ``params``: the first of ``prefixes`` whose subtree holds it, or "". A prefix that matches no
  parameter is an error (a typo would otherwise silently apply to nothing)."""
  prefixes = [p.strip("/") for p in prefixes]
  used = set()

  def label(path, _):
    name = param_path(path)
    hits = [p for p in prefixes if name == p or name.startswith(p + "/")]
    used.update(hits)
    return hits[0] if hits else ""

  labels = jax.tree_util.tree_map_with_path(label, params)
  unused = [p for p in prefixes if p not in used]
  if unused:
    top = sorted({param_path(path).split("/")[0] for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]})
    raise ValueError(f"{what} prefixes {unused} match no parameter; top-level parameter trees are {top}")
  return labels


def scale_subtrees(factors: Sequence[tuple[str, float]], what: str) -> optax.GradientTransformation:
  """Stateless: multiplies the updates of each prefix's subtree by its factor (stateless so
  optax.tree_utils.tree_map_params, which inits optimizers on a placeholder instead of params, still maps the
  optimizer state)."""
  by_prefix = {p.strip("/"): float(f) for p, f in factors}

  def update(updates, state, params=None):
    del params
    labels = subtree_labels(updates, list(by_prefix), what)
    return jax.tree.map(lambda u, label: u * by_prefix[label] if label else u, updates, labels), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def check_prefixes(params, config: OptimizerConfig) -> None:
  """Fails now, not at step 1, if a ``frozen`` or ``lr_scale`` prefix matches no parameter."""
  subtree_labels(params, config.frozen, "optimizer.frozen")
  subtree_labels(params, [p for p, _ in config.lr_scale], "optimizer.lr_scale")


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
  adamw = optax.adamw(
    learning_rate_schedule(config), b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay
  )
  chain = [optax.clip_by_global_norm(config.max_grad_norm), adamw]
  if config.lr_scale:
    chain.append(scale_subtrees(config.lr_scale, "optimizer.lr_scale"))
  if config.frozen:
    # Frozen gradients are zeroed before clipping (so they do not count in the norm) and the updates after AdamW
    # (whose decoupled weight decay would otherwise shrink them). Their Adam moments stay zero.
    zero = scale_subtrees([(p, 0.0) for p in config.frozen], "optimizer.frozen")
    chain = [zero, *chain, zero]
  return optax.chain(*chain)


@flax.struct.dataclass
class TrainState:
  """Everything an update reads and writes.

  ``step`` counts update calls, skipped ones included (it is the trainer's step, for checkpoints and logs);
  ``skipped_updates`` counts the calls whose loss or gradient norm was not finite and that therefore left
  ``params`` and ``opt_state`` untouched. The optimizer's own counts (bias correction, lr schedule) advance only on
  applied updates, so the lr of the next update is ``schedule(step - skipped_updates)``.

  ``ref_params`` is the frozen reference policy of the KL term: a separate copy of the initial params, or None
  when the run has no KL term (kl_coef == 0), which saves one model's worth of device memory. It is never the
  same buffers as ``params``: those are donated to every update and would be invalidated.

  ``rng`` is raw uint32 key data (``jax.random.key_data``), so checkpoints store a plain array; the update
  does not consume it (wrap with ``jax.random.wrap_key_data`` for sampling).
  """

  step: jax.Array  # int32 []
  params: Any
  ref_params: Any | None
  opt_state: Any
  rng: jax.Array  # uint32 [2] (raw key data)
  skipped_updates: jax.Array  # int32 []


REFERENCE_MEMORY = ("device", "host")  # where the frozen reference lives: device memory, or pinned host memory


def check_reference_memory(value) -> str:
  if value not in REFERENCE_MEMORY:
    raise ValueError(f"reference_memory must be one of {REFERENCE_MEMORY}, got {value!r}")
  return value


def _key_data(rng) -> jax.Array:
  rng = jnp.asarray(rng) if not isinstance(rng, jax.Array) else rng
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(rng)
  if rng.dtype != jnp.uint32:
    raise ValueError(f"rng must be a jax.random.key or raw uint32 key data, got dtype {rng.dtype}")
  return rng


def train_state_shardings(
  abstract_params,
  param_specs,
  optimizer: optax.GradientTransformation,
  mesh: Mesh,
  rules=rules_lib.DEFAULT_RULES,
  keep_reference: bool = True,
  reference_memory: str = "device",
) -> TrainState:
  """NamedShardings of every TrainState leaf: params (and reference) from their logical specs, the optimizer
  state's param-shaped trees likewise, every scalar replicated. ``reference_memory="host"`` puts the reference in
  pinned host memory (same layout): one model's worth of device memory freed, paid for with a host-to-device copy
  of it for each reference log-prob pass (``on_device``).

  ``abstract_params`` may be params or ShapeDtypeStructs (``models.abstract_params``): only shapes are read.
  """
  check_reference_memory(reference_memory)
  params_sharding = mesh_lib.param_shardings(param_specs, mesh, rules)
  replicated = NamedSharding(mesh, PartitionSpec())
  abstract_opt_state = jax.eval_shape(optimizer.init, abstract_params)
  opt_sharding = optax.tree_utils.tree_map_params(
    optimizer,
    lambda _, sharding: sharding,
    abstract_opt_state,
    params_sharding,
    transform_non_params=lambda _: replicated,
  )
  return TrainState(
    step=replicated,
    params=params_sharding,
    ref_params=(reference_shardings(params_sharding, reference_memory) if keep_reference else None),
    opt_state=opt_sharding,
    rng=replicated,
    skipped_updates=replicated,
  )


def reference_shardings(params_sharding, reference_memory: str):
  """The reference's shardings: the params' own, in pinned host memory when ``reference_memory="host"``."""
  if check_reference_memory(reference_memory) == "device":
    return params_sharding
  return jax.tree.map(lambda sharding: sharding.with_memory_kind("pinned_host"), params_sharding)


def on_device(ref_params, params_sharding):
  """The reference in device memory for one forward (a copy when it lives on the host; itself otherwise)."""
  return jax.device_put(ref_params, params_sharding)


def abstract_train_state(
  abstract_params,
  param_specs,
  optimizer: optax.GradientTransformation,
  mesh: Mesh,
  rules=rules_lib.DEFAULT_RULES,
  keep_reference: bool = True,
  reference_memory: str = "device",
) -> TrainState:
  """ShapeDtypeStructs with shardings of the state ``create_train_state`` makes (an orbax restore target)."""
  shardings = train_state_shardings(
    abstract_params, param_specs, optimizer, mesh, rules, keep_reference, reference_memory
  )
  shapes = jax.eval_shape(
    lambda params: _initial_state(params, optimizer, jnp.zeros((2,), jnp.uint32), keep_reference), abstract_params
  )
  return jax.tree.map(
    lambda shape, sharding: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding), shapes, shardings
  )


def _initial_state(params, optimizer, rng, keep_reference: bool) -> TrainState:
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    ref_params=jax.tree.map(jnp.copy, params) if keep_reference else None,
    opt_state=optimizer.init(params),
    rng=rng,
    skipped_updates=jnp.zeros((), jnp.int32),
  )


def create_train_state(
  params,
  param_specs,
  optimizer_config: OptimizerConfig,
  rng,
  mesh: Mesh,
  rules=rules_lib.DEFAULT_RULES,
  keep_reference: bool = True,
  reference_memory: str = "device",
) -> TrainState:
  """The initial state on the mesh: params (host or device arrays) placed by their logical specs, a reference
  copy when ``keep_reference`` (in ``reference_memory``), a zero optimizer state sharded like the params.

  ``keep_reference=False`` (for kl_coef == 0, and for SFT) stores no reference. The input ``params`` are not
  consumed; drop them after this call so only the state's copies stay alive.
  """
  optimizer = make_optimizer(optimizer_config)
  check_prefixes(params, optimizer_config)
  params = mesh_lib.shard_params(params, param_specs, mesh, rules)
  shardings = train_state_shardings(params, param_specs, optimizer, mesh, rules, keep_reference, reference_memory)
  init = jax.jit(
    lambda params, rng: _initial_state(params, optimizer, rng, keep_reference),
    in_shardings=(shardings.params, shardings.rng),
    out_shardings=shardings,
  )
  return init(params, host_lib.to_global(np.asarray(_key_data(rng)), shardings.rng))
