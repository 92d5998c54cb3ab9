"""Run options against transformers: scanned layers and remat (gradients vs torch autograd)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import qwen_tiny as qt
from vrrl_jax.checkpoints import hf as hf_ckpt
from vrrl_jax.models import Qwen25VL, Qwen25VLConfig, prepare_inputs

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def example():
  """Untied model, one left-padded batch with three images, its transformers logits and loss gradients."""
  model = qt.build_hf_model(tie_word_embeddings=False, seed=3)
  rng = np.random.default_rng(0)
  grids = [(1, 4, 6), (1, 6, 4), (1, 4, 4)]
  ids, mask = qt.left_pad([qt.make_row(rng, [2, grids[0], 3]), qt.make_row(rng, [4, grids[1], 2, grids[2], 3])])
  pixels = qt.random_pixels(grids, rng)
  # loss = sum over real tokens of logits * weights: every parameter gets a gradient.
  weights = (rng.standard_normal((*ids.shape, 256)) * mask[..., None]).astype(np.float32)
  model.zero_grad()
  logits = model(
    input_ids=torch.tensor(ids),
    attention_mask=torch.tensor(mask),
    mm_token_type_ids=torch.tensor((ids == qt.IMAGE_TOKEN_ID).astype(np.int64)),
    pixel_values=torch.tensor(pixels),
    image_grid_thw=torch.tensor(grids),
  ).logits
  (logits * torch.tensor(weights)).sum().backward()
  grads = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
  return dict(
    model=model,
    ids=ids,
    mask=mask,
    grids=grids,
    pixels=pixels,
    weights=weights,
    ref_logits=logits.detach().numpy(),
    ref_grads=grads,
  )


def convert(example, **options):
  config = Qwen25VLConfig.from_hf(example["model"].config, **options)
  return config, hf_ckpt.params_from_state_dict(example["model"].state_dict(), config)


def prepare(config, example):
  inputs, _ = prepare_inputs(config, example["ids"], example["mask"], example["pixels"], np.array(example["grids"]))
  return inputs


@functools.cache
def jitted_logits(config):
  model = Qwen25VL(config)
  return jax.jit(lambda params, inputs: model.apply({"params": params}, inputs, method=Qwen25VL.forward).logits)


def test_scanned_layers_match_transformers(example):
  config, params = convert(example, scan_layers=True)
  assert params["language_model"]["layers"]["mlp"]["up_proj"]["kernel"].shape == (2, 64, 128)
  assert params["visual"]["blocks"]["attn"]["qkv"]["kernel"].shape == (4, 32, 3, 2, 16)
  logits = jitted_logits(config)(params, prepare(config, example))
  err = qt.rel_error(logits, example["ref_logits"], example["mask"])
  print(f"[parity] scan_layers logits: rel {err:.2e}")
  assert err <= TOLERANCE


@pytest.mark.parametrize(
  "scan_layers, remat_policy", [(False, None), (False, "nothing_saveable"), (True, "nothing_saveable")]
)
def test_gradients_match_torch_autograd(example, scan_layers, remat_policy):
  config, params = convert(example, scan_layers=scan_layers, remat_policy=remat_policy)
  model = Qwen25VL(config)
  inputs = prepare(config, example)

  def loss_fn(params):
    logits = model.apply({"params": params}, inputs, method=Qwen25VL.forward).logits
    return jnp.sum(logits * example["weights"])

  grads = jax.jit(jax.grad(loss_fn))(params)
  ref = hf_ckpt.params_from_state_dict(example["ref_grads"], config)
  errors = jax.tree.map(lambda ours, theirs: qt.rel_error(ours, theirs), grads, ref)
  worst = max(jax.tree.leaves(errors))
  print(f"[parity] gradients scan={scan_layers} remat={remat_policy}: max per-tensor rel {worst:.2e}")
  assert worst <= TOLERANCE
