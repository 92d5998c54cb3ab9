"""bfloat16 compute (with float32 or bfloat16 params) runs and stays close to the float32 transformers logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import qwen_tiny as qt
from vrrl_jax.checkpoints import hf as hf_ckpt
from vrrl_jax.models import Qwen25VL, Qwen25VLConfig, prepare_inputs


@pytest.fixture(scope="module")
def example():
  model = qt.build_hf_model(tie_word_embeddings=False, seed=4)
  rng = np.random.default_rng(0)
  grids = [(1, 4, 6), (1, 6, 4), (1, 4, 4)]
  ids, mask = qt.left_pad([qt.make_row(rng, [2, grids[0], 3]), qt.make_row(rng, [4, grids[1], 2, grids[2], 3])])
  pixels = qt.random_pixels(grids, rng)
  with torch.no_grad():
    ref = model(
      input_ids=torch.tensor(ids),
      attention_mask=torch.tensor(mask),
      mm_token_type_ids=torch.tensor((ids == qt.IMAGE_TOKEN_ID).astype(np.int64)),
      pixel_values=torch.tensor(pixels),
      image_grid_thw=torch.tensor(grids),
    ).logits.numpy()
  return dict(model=model, ids=ids, mask=mask, grids=grids, pixels=pixels, ref_logits=ref)


@pytest.mark.parametrize("param_dtype", ["float32", "bfloat16"])
def test_bfloat16_is_close(example, param_dtype):
  config = Qwen25VLConfig.from_hf(example["model"].config, dtype="bfloat16", param_dtype=param_dtype)
  params = hf_ckpt.params_from_state_dict(example["model"].state_dict(), config)
  assert jax.tree.leaves(params)[0].dtype == jnp.dtype(param_dtype)
  inputs, _ = prepare_inputs(config, example["ids"], example["mask"], example["pixels"], np.array(example["grids"]))
  forward = jax.jit(
    lambda params, inputs: Qwen25VL(config).apply({"params": params}, inputs, method=Qwen25VL.forward).logits
  )
  logits = np.asarray(forward(params, inputs))
  err = qt.rel_error(logits, example["ref_logits"], example["mask"])
  print(f"[parity] bfloat16 compute, {param_dtype} params: rel {err:.2e}")
  assert np.all(np.isfinite(logits)) and err <= 5e-2
