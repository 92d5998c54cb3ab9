"""Small building blocks shared by the vision tower and the decoder. Every parameter carries logical axis names."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

KERNEL_INIT = nn.initializers.normal(stddev=0.02)


class DenseGeneral(nn.Module):
  """x[..., in axes] @ kernel[in axes, out axes] (+ bias[out axes]).

  The kernel is created in its final shape with logical names `axis_names` (input axes then output axes); the
  bias takes the output names. (flax's nn.DenseGeneral initialises a flattened kernel, whose logical names then
  do not fit under a mesh.)
  """

  features: tuple[int, ...]
  axis_names: tuple[str | None, ...]
  num_input_axes: int
  use_bias: bool
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  precision: jax.lax.Precision

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_shape = x.shape[x.ndim - self.num_input_axes :]
    kernel = self.param(
      "kernel", nn.with_logical_partitioning(KERNEL_INIT, self.axis_names), in_shape + self.features, self.param_dtype
    )
    contract = (tuple(range(x.ndim - self.num_input_axes, x.ndim)), tuple(range(self.num_input_axes)))
    y = jax.lax.dot_general(
      x.astype(self.dtype), kernel.astype(self.dtype), (contract, ((), ())), precision=self.precision
    )
    if self.use_bias:
      bias = self.param(
        "bias",
        nn.with_logical_partitioning(nn.initializers.zeros, self.axis_names[self.num_input_axes :]),
        self.features,
        self.param_dtype,
      )
      y = y + bias.astype(self.dtype)
    return y


def dense(
  features,
  axis_names: Sequence[str | None],
  *,
  use_bias: bool,
  dtype,
  param_dtype,
  precision,
  num_input_axes: int = 1,
  name: str | None = None,
) -> DenseGeneral:
  features = (features,) if isinstance(features, int) else tuple(features)
  return DenseGeneral(features, tuple(axis_names), num_input_axes, use_bias, dtype, param_dtype, precision, name=name)


class RMSNorm(nn.Module):
  """Qwen RMSNorm: normalise in float32, cast to the activation dtype, then multiply by the weight."""

  epsilon: float
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  axis_name: str = "norm"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param(
      "scale", nn.with_logical_partitioning(nn.initializers.ones, (self.axis_name,)), (x.shape[-1],), self.param_dtype
    )
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.epsilon)
    return scale.astype(self.dtype) * normed.astype(self.dtype)


class GatedMlp(nn.Module):
  """down(silu(gate(x)) * up(x))."""

  hidden_size: int
  intermediate_size: int
  use_bias: bool
  embed_axis: str
  mlp_axis: str
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  precision: jax.lax.Precision

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
    gate = dense(self.intermediate_size, (self.embed_axis, self.mlp_axis), name="gate_proj", **kw)(x)
    up = dense(self.intermediate_size, (self.embed_axis, self.mlp_axis), name="up_proj", **kw)(x)
    return dense(self.hidden_size, (self.mlp_axis, self.embed_axis), name="down_proj", **kw)(nn.silu(gate) * up)
