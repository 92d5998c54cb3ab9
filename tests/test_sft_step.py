"""SFT step: its loss is transformers' masked next-token cross entropy (token-mean over assistant tokens), and a few
updates on one tiny batch drive it down."""

import functools

import jax
import numpy as np
import pytest
import torch

import qwen_tiny as qt
from vrrl_jax.checkpoints import hf as hf_ckpt
from vrrl_jax.models import families
from vrrl_jax.parallel import mesh as mesh_lib
from vrrl_jax.parallel import rules as rules_lib
from vrrl_jax.rl import step as rl_step
from vrrl_jax.rl import train_state as ts
from vrrl_jax.sft import step as sft_step

RULES = rules_lib.DEFAULT_RULES
OPTIMIZER = ts.OptimizerConfig(learning_rate=3e-3)
ROWS = [[3, (1, 4, 4), 6], [5, (1, 4, 6), 4, (1, 4, 4), 5], [2, (1, 6, 4), 9], [6, (1, 4, 4), 3]]


def tiny_rows(seed: int, family: str):
  """ROWS as token ids, attention mask, image grids, pixels and the assistant mask (each row's last text piece)."""
  rng = np.random.default_rng(seed)
  ids, attention = qt.left_pad([qt.make_row(rng, pieces) for pieces in ROWS])
  grids = [piece for pieces in ROWS for piece in pieces if isinstance(piece, tuple)]
  pixels = qt.random_pixels(grids, rng, family)
  assistant = np.zeros(ids.shape, np.float32)
  for b, pieces in enumerate(ROWS):
    assistant[b, ids.shape[1] - pieces[-1] :] = 1
  return ids, attention, grids, pixels, assistant


@pytest.mark.parametrize("family", qt.FAMILIES)
def test_sft_loss_matches_torch_cross_entropy_and_decreases(family):
  hf_model = qt.build_one_block_hf_model(seed=2, family=family)
  config = families.config_from_hf(hf_model.config.to_dict())
  params = hf_ckpt.params_from_state_dict(hf_model.state_dict(), config)
  _, specs = families.abstract_params(config)
  ids, attention, grids, pixels, assistant = tiny_rows(0, family)

  with torch.no_grad():
    logits = hf_model(
      input_ids=torch.tensor(ids),
      attention_mask=torch.tensor(attention),
      mm_token_type_ids=torch.tensor((ids == qt.IMAGE_TOKEN_ID).astype(np.int64)),
      pixel_values=torch.tensor(pixels),
      image_grid_thw=torch.tensor(grids),
    ).logits
    nll = torch.nn.functional.cross_entropy(
      logits[:, :-1].reshape(-1, logits.shape[-1]).double(), torch.tensor(ids[:, 1:]).reshape(-1), reduction="none"
    )
    mask = torch.tensor(assistant[:, 1:]).reshape(-1).double()
    expected = float((nll * mask).sum() / mask.sum())

  split = functools.partial(rl_step.micro_batch_rows, num_micro_batches=2)
  targets, loss_mask = rl_step.next_token_targets(ids, assistant)
  batch = sft_step.SFTBatch(
    inputs=rl_step.prepare_micro_batches(config, ids, attention, pixels, np.array(grids), 2, patch_multiple=16),
    targets=split(targets),
    loss_mask=split(loss_mask),
  )
  mesh = mesh_lib.make_mesh(dict(data=1), devices=jax.devices()[:1])
  state = ts.create_train_state(params, specs, OPTIMIZER, jax.random.key(0), mesh, RULES, keep_reference=False)
  assert state.ref_params is None
  train = sft_step.make_sft_step(
    families.build(config), mesh, RULES, OPTIMIZER, jax.tree.map(lambda x: x.sharding, state), chunk_size=7
  )
  losses = []
  for _ in range(4):
    state, metrics = train(state, batch)
    assert int(metrics["skipped"]) == 0
    losses.append(float(metrics["loss"]))
  err = abs(losses[0] - expected) / expected
  print(
    f"[sft step] loss at init vs torch masked cross entropy: rel {err:.2e}; NLL over 4 steps: "
    + ", ".join(f"{x:.3f}" for x in losses)
  )
  assert err <= 1e-5
  assert float(metrics["n_tokens"]) == assistant[:, 1:].sum()
  assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.8 * losses[0]
  assert int(state.step) == 4


@pytest.mark.parametrize("family", qt.FAMILIES)
@pytest.mark.parametrize("case", ["frozen", "lr_scale"])
def test_vision_tower_frozen_or_scaled_against_torch_grads_and_numpy_adamw(case, family):
  """optimizer.frozen=("visual",): the vision tower is bit-for-bit unchanged, and every other parameter takes the
  AdamW step a numpy AdamW computes from torch's gradients, clipped by the norm of the trainable gradients only.
  optimizer.lr_scale=(("visual", 0.1),): the vision tower takes that step at 0.1 x lr (a torch param group), the
  clip counting every gradient."""
  hf_model = qt.build_one_block_hf_model(seed=3, family=family)
  config = families.config_from_hf(hf_model.config.to_dict())
  params = hf_ckpt.params_from_state_dict(hf_model.state_dict(), config)
  _, specs = families.abstract_params(config)
  ids, attention, grids, pixels, assistant = tiny_rows(1, family)

  logits = hf_model(
    input_ids=torch.tensor(ids),
    attention_mask=torch.tensor(attention),
    mm_token_type_ids=torch.tensor((ids == qt.IMAGE_TOKEN_ID).astype(np.int64)),
    pixel_values=torch.tensor(pixels),
    image_grid_thw=torch.tensor(grids),
  ).logits
  nll = torch.nn.functional.cross_entropy(
    logits[:, :-1].reshape(-1, logits.shape[-1]), torch.tensor(ids[:, 1:]).reshape(-1), reduction="none"
  )
  mask = torch.tensor(assistant[:, 1:]).reshape(-1)
  ((nll * mask).sum() / mask.sum()).backward()
  named = dict(hf_model.named_parameters())
  grads = hf_ckpt.params_from_state_dict(
    {k: named[k].grad if named[k].grad is not None else torch.zeros_like(named[k]) for k in hf_model.state_dict()},
    config,
  )
  flat_g = {ts.param_path(p): np.asarray(x, np.float64) for p, x in jax.tree_util.tree_flatten_with_path(grads)[0]}
  flat_p = {ts.param_path(p): np.asarray(x, np.float64) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  trainable = [k for k in flat_g if not k.startswith("visual/")]
  norm_trainable = np.sqrt(sum(np.sum(flat_g[k] ** 2) for k in trainable))
  norm_all = np.sqrt(sum(np.sum(g**2) for g in flat_g.values()))
  assert norm_all > 1.05 * norm_trainable  # the vision grads are big enough that counting them would show
  lr, wd, eps, max_norm = 1e-2, 0.1, 0.1, 0.5 * norm_trainable  # eps ~ |g|: the step depends on the clip scale
  if case == "frozen":
    opt = ts.OptimizerConfig(learning_rate=lr, weight_decay=wd, eps=eps, max_grad_norm=max_norm, frozen=("visual",))
    clip_norm, vision_factor = norm_trainable, 0.0
  else:
    opt = ts.OptimizerConfig(
      learning_rate=lr, weight_decay=wd, eps=eps, max_grad_norm=max_norm, lr_scale=(("visual", 0.1),)
    )
    clip_norm, vision_factor = norm_all, 0.1

  targets, loss_mask = rl_step.next_token_targets(ids, assistant)
  batch = sft_step.SFTBatch(
    inputs=rl_step.prepare_micro_batches(config, ids, attention, pixels, np.array(grids), 1, patch_multiple=16),
    targets=targets[None],
    loss_mask=loss_mask[None],
  )
  mesh = mesh_lib.make_mesh(dict(data=1), devices=jax.devices()[:1])
  state = ts.create_train_state(params, specs, opt, jax.random.key(0), mesh, RULES, keep_reference=False)
  train = sft_step.make_sft_step(families.build(config), mesh, RULES, opt, jax.tree.map(lambda x: x.sharding, state))
  state, metrics = train(state, batch)
  assert int(metrics["skipped"]) == 0
  new = {ts.param_path(p): np.asarray(x, np.float64) for p, x in jax.tree_util.tree_flatten_with_path(state.params)[0]}

  scale = min(1.0, max_norm / clip_norm)
  worst = 0.0
  for k, p0 in flat_p.items():
    if k.startswith("visual/") and case == "frozen":
      np.testing.assert_array_equal(new[k], p0)
      continue
    step_lr = lr * (vision_factor if k.startswith("visual/") else 1.0)
    g = scale * flat_g[k]
    expected = p0 - step_lr * (g / (np.abs(g) + eps) + wd * p0)  # first AdamW step: m_hat = g, v_hat = g^2
    worst = max(worst, float(np.max(np.abs(new[k] - expected)) / (lr + 1e-30)))
  print(f"[{case} vision] max |param - numpy AdamW| / lr: {worst:.2e}")
  assert worst <= 1e-3
  bad_configs = [
    dict(frozen=("vision",)),
    dict(frozen="visual"),
    dict(frozen=("",)),
    dict(lr_scale=(("vision", 0.1),)),
    dict(lr_scale=(("visual", -1.0),)),
    dict(lr_scale=("visual",)),
  ]
  for bad in bad_configs:
    with np.testing.assert_raises(ValueError):
      ts.create_train_state(
        params, specs, ts.OptimizerConfig(**bad), jax.random.key(0), mesh, RULES, keep_reference=False
      )
