"""RL device steps against independent references: transformers' torch model (log-probs, gradient norm, one
torch.optim.AdamW step after clip_grad_norm_) and a numpy transcription of the spec's loss (VRRL_SPEC section 4,
step 7); exact micro-batch accumulation; the non-finite skip.

One tiny model (1 decoder layer, 1 vision block) and one 8-row left-padded batch with images of several sizes;
jit compiles dominate the run time, so every test reuses the few compiled steps (same shapes and StepConfig).
Run with -s to see the measured errors.
"""

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import qwen_tiny as qt
from vrrl_jax.checkpoints import hf as hf_ckpt
from vrrl_jax.models import families
from vrrl_jax.parallel import mesh as mesh_lib
from vrrl_jax.parallel import rules as rules_lib
from vrrl_jax.rl import loss as loss_lib
from vrrl_jax.rl import step as step_lib
from vrrl_jax.rl import train_state as ts

CHUNK = 5  # divides none of the sequence lengths below (24)
RULES = rules_lib.DEFAULT_RULES
# eps 1e-3 keeps Adam's first step g / (|g| + eps) proportional to small gradient entries rather than their sign,
# so comparing updated params compares gradients, and float noise on near-zero gradients stays invisible.
# lr 1e-2: float32 rounding of O(1) params is then ~1e-5 of the update, below the update comparison's tolerance.
OPTIMIZER = ts.OptimizerConfig(learning_rate=1e-2, eps=1e-3)
# Rows: text tokens (ints) and images (t, h, w); the last text piece is the "response" that carries loss.
ROWS = [
  [3, (1, 4, 4), 6],
  [5, (1, 4, 6), 4],
  [2, (1, 6, 4), 9],
  [4, (1, 4, 4), 3, (1, 4, 4), 5],
  [6, (1, 4, 4), 2],
  [1, (1, 4, 6), 7],
  [3, (1, 4, 4), 4],
  [2, (1, 4, 4), 8],
]
EMPTY_ROW = 6  # no loss tokens at all (a fully masked sample)


def hf_token_logprobs(model, ids, mask, grids, pixels):
  """torch log_softmax(logits)[t, ids[t + 1]] and the entropy at t, [B, S - 1] float64, with the autograd graph."""
  logits = model(
    input_ids=torch.tensor(ids),
    attention_mask=torch.tensor(mask),
    mm_token_type_ids=torch.tensor((ids == qt.IMAGE_TOKEN_ID).astype(np.int64)),
    pixel_values=torch.tensor(pixels),
    image_grid_thw=torch.tensor(grids),
  ).logits
  log_probs = torch.log_softmax(logits.double(), dim=-1)[:, :-1]
  logp = torch.gather(log_probs, 2, torch.tensor(ids[:, 1:])[..., None])[..., 0]
  entropy = -(log_probs.exp() * log_probs).sum(-1)
  return logp, entropy.detach().numpy()


@pytest.fixture(scope="module", params=qt.FAMILIES)
def setup(request):
  hf_model = qt.build_one_block_hf_model(seed=0, family=request.param)
  config = families.config_from_hf(hf_model.config.to_dict())
  params = hf_ckpt.params_from_state_dict(hf_model.state_dict(), config)
  _, specs = families.abstract_params(config)
  rng = np.random.default_rng(0)
  rows, response = [], []
  for pieces in ROWS:
    rows.append(qt.make_row(rng, pieces))
    response.append(pieces[-1])
  ids, attention = qt.left_pad(rows)
  grids = [piece for pieces in ROWS for piece in pieces if isinstance(piece, tuple)]
  pixels = qt.random_pixels(grids, rng, request.param)
  token_mask = np.zeros(ids.shape, np.float32)
  for b, length in enumerate(response):
    token_mask[b, ids.shape[1] - length :] = 1
  token_mask[1, ids.shape[1] - 4 : ids.shape[1] - 2] = 0  # a masked turn inside a response
  token_mask[EMPTY_ROW] = 0
  targets, loss_mask = step_lib.next_token_targets(ids, token_mask)

  with torch.no_grad():
    hf_logp, hf_entropy = hf_token_logprobs(hf_model, ids, attention, grids, pixels)
  hf_logp = hf_logp.numpy()
  # Rollout and reference log-probs away from the current policy so every clip branch is taken.
  valid = loss_mask[:, :-1] > 0
  old_logp = np.zeros(ids.shape, np.float32)
  old_logp[:, :-1] = np.where(valid, hf_logp - rng.normal(scale=0.5, size=hf_logp.shape), 0.0)
  old_logp[0, -6:-3] = hf_logp[0, -5:-2] - 1.5  # ratio e^1.5 > dual clip 3 ...
  ref_logp = np.zeros(ids.shape, np.float32)
  ref_logp[:, :-1] = np.where(valid, hf_logp + rng.normal(scale=0.5, size=hf_logp.shape), 0.0)
  advantages = rng.normal(scale=1.5, size=len(ROWS)).astype(np.float32)
  advantages[0] = -1.0  # ... with a negative advantage
  return dict(
    hf_model=hf_model,
    config=config,
    params=params,
    specs=specs,
    ids=ids,
    attention=attention,
    grids=np.array(grids),
    pixels=pixels,
    targets=targets,
    loss_mask=loss_mask,
    hf_logp=hf_logp,
    hf_entropy=hf_entropy,
    old_logp=old_logp,
    ref_logp=ref_logp,
    advantages=advantages,
  )


@functools.cache
def single_device_mesh():
  return mesh_lib.make_mesh(dict(data=1), devices=jax.devices()[:1])


def step_config(mode: str) -> step_lib.StepConfig:
  return step_lib.StepConfig(
    loss=loss_lib.PolicyLossConfig(loss_agg_mode=mode), optimizer=OPTIMIZER, logprob_chunk_size=CHUNK
  )


def new_state(setup):
  return ts.create_train_state(
    setup["params"], setup["specs"], OPTIMIZER, jax.random.key(0), single_device_mesh(), RULES
  )


@pytest.fixture(scope="module")
def train_steps(setup):
  """mode -> the jitted train step (one per loss mode, so each batch shape compiles once per file)."""
  state_shardings = ts.train_state_shardings(
    setup["params"], setup["specs"], ts.make_optimizer(OPTIMIZER), single_device_mesh(), RULES
  )
  model = families.build(setup["config"])
  return {
    mode: step_lib.make_train_step(model, single_device_mesh(), RULES, step_config(mode), state_shardings)
    for mode in loss_lib.LOSS_AGG_MODES
  }


def make_batch(setup, num_micro_batches, advantages=None):
  split = functools.partial(step_lib.micro_batch_rows, num_micro_batches=num_micro_batches)
  inputs = step_lib.prepare_micro_batches(
    setup["config"],
    setup["ids"],
    setup["attention"],
    setup["pixels"],
    setup["grids"],
    num_micro_batches,
    patch_multiple=16,
  )
  advantages = setup["advantages"] if advantages is None else advantages
  return step_lib.RLBatch(
    inputs=inputs,
    targets=split(setup["targets"]),
    loss_mask=split(setup["loss_mask"]),
    advantages=split(advantages),
    old_logp=split(setup["old_logp"]),
    ref_logp=split(setup["ref_logp"]),
  )


def numpy_loss(logp, old, ref, adv, mask, mode, clip_low=0.2, clip_high=0.3, dual_clip=3.0, kl_coef=0.01):
  """The spec's loss in float64 numpy: per token max(-A r, -A clip(r, 1-l, 1+h)), capped at -A c for A < 0, plus
  kl_coef * k3(ref - logp) clamped to [-10, 10]; token-mean or mean over non-empty rows of row means."""
  logp, old, ref, mask = (np.asarray(a, np.float64) for a in (logp, old, ref, mask))
  adv = np.asarray(adv, np.float64)[:, None]
  log_ratio = np.clip(logp - old, -20, 20)
  ratio = np.exp(log_ratio)
  per_token = np.maximum(-adv * ratio, -adv * np.clip(ratio, 1 - clip_low, 1 + clip_high))
  per_token = np.where(adv < 0, np.minimum(per_token, -adv * dual_clip), per_token)
  d = np.clip(ref - logp, -20, 20)
  kl = np.clip(np.exp(d) - d - 1, -10, 10)
  if mode == loss_lib.TOKEN_MEAN:
    agg = lambda x: (x * mask).sum() / mask.sum()
  else:
    rows = mask.sum(1) > 0
    agg = lambda x: ((x * mask).sum(1)[rows] / mask.sum(1)[rows]).mean()
  return agg(per_token) + kl_coef * agg(kl), ratio


def host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def max_rel_error(ours, ref):
  errors = jax.tree.map(lambda a, b: qt.rel_error(a, b) if np.abs(b).max() > 0 else float(np.abs(a).max()), ours, ref)
  worst = max(jax.tree_util.tree_leaves_with_path(errors), key=lambda kv: kv[1])
  print(f"[rl step] worst tensor {jax.tree_util.keystr(worst[0])}: rel {worst[1]:.2e}")
  return worst[1]


def test_logprobs_match_transformers(setup):
  """Chunked log-probs of two micro-batches (images packed per micro-batch) equal torch's log_softmax."""
  param_shardings = mesh_lib.param_shardings(setup["specs"], single_device_mesh(), RULES)
  logprob_fn = step_lib.make_logprob_fn(
    families.build(setup["config"]), single_device_mesh(), RULES, param_shardings, chunk_size=CHUNK
  )
  batch = make_batch(setup, num_micro_batches=2)
  logp = np.asarray(logprob_fn(setup["params"], batch.inputs, batch.targets)).reshape(setup["ids"].shape)
  valid = (setup["attention"][:, :-1] > 0) & (setup["attention"][:, 1:] > 0)
  err = qt.rel_error(logp[:, :-1], setup["hf_logp"], valid)
  print(f"[rl step] log-probs vs transformers (chunk {CHUNK}, 2 micro-batches): rel {err:.2e}")
  assert err <= 1e-4
  assert np.isfinite(logp).all()


def torch_one_batch_update(setup, mode):
  """The spec's loss in torch on the whole batch at once, backward, clip_grad_norm_(1.0), one AdamW step:
  (loss, grad norm, updated params in our layout)."""
  model = copy.deepcopy(setup["hf_model"])
  logp, _ = hf_token_logprobs(model, setup["ids"], setup["attention"], setup["grids"], setup["pixels"])
  old, ref, mask = (torch.tensor(setup[k][:, :-1], dtype=torch.float64) for k in ("old_logp", "ref_logp", "loss_mask"))
  adv = torch.tensor(setup["advantages"], dtype=torch.float64)[:, None]
  ratio = torch.exp(torch.clamp(logp - old, -20, 20))
  per_token = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 0.8, 1.3))
  per_token = torch.where(adv < 0, torch.minimum(per_token, -adv * 3.0), per_token)
  d = torch.clamp(ref - logp, -20, 20)
  per_token = per_token + 0.01 * torch.clamp(torch.exp(d) - d - 1, -10, 10)
  if mode == loss_lib.TOKEN_MEAN:
    loss = (per_token * mask).sum() / mask.sum()
  else:
    rows = mask.sum(1) > 0
    loss = ((per_token * mask).sum(1)[rows] / mask.sum(1)[rows]).mean()
  optimizer = torch.optim.AdamW(
    model.parameters(),
    lr=OPTIMIZER.learning_rate,
    betas=(OPTIMIZER.b1, OPTIMIZER.b2),
    eps=OPTIMIZER.eps,
    weight_decay=OPTIMIZER.weight_decay,
  )
  loss.backward()
  grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIMIZER.max_grad_norm))
  optimizer.step()
  return float(loss.detach()), grad_norm, hf_ckpt.params_from_state_dict(model.state_dict(), setup["config"])


@pytest.mark.parametrize("mode", [loss_lib.TOKEN_MEAN, loss_lib.SEQ_MEAN_TOKEN_MEAN])
def test_four_micro_batches_equal_one_batch_in_numpy_and_torch(setup, train_steps, mode):
  """Our update over 4 micro-batches (rows of unequal loss-token counts, images packed per micro-batch) against the
  one-batch loss in numpy and the one-batch torch update: loss, gradient norm, entropy, updated params."""
  state = new_state(setup)
  before = host(state)
  after, metrics = train_steps[mode](state, make_batch(setup, 4))
  after, metrics = host(after), {k: float(v) for k, v in metrics.items()}

  mask = setup["loss_mask"][:, :-1]
  expected_loss, ratio = numpy_loss(
    setup["hf_logp"], setup["old_logp"][:, :-1], setup["ref_logp"][:, :-1], setup["advantages"], mask, mode
  )
  kept, adv = mask > 0, setup["advantages"][:, None]
  assert ((adv > 0) & (ratio > 1.3))[kept].any() and ((adv < 0) & (ratio < 0.8))[kept].any()
  assert ((adv < 0) & (ratio > 3.0))[kept].any()  # every branch of the dual-clip loss is exercised
  torch_loss, grad_norm, torch_params = torch_one_batch_update(setup, mode)
  loss_err = abs(metrics["loss"] - expected_loss) / abs(expected_loss)
  norm_err = abs(metrics["grad_norm"] - grad_norm) / grad_norm
  update_err = max_rel_error(
    jax.tree.map(np.subtract, after.params, before.params), jax.tree.map(np.subtract, torch_params, before.params)
  )
  print(
    f"[rl step] {mode}, 4 micro-batches vs one batch: loss vs numpy rel {loss_err:.2e} (torch's loss rel "
    f"{abs(torch_loss - expected_loss) / abs(expected_loss):.2e}); grad norm {grad_norm:.3f} vs torch rel "
    f"{norm_err:.2e}; AdamW update vs torch: max per-tensor rel {update_err:.2e}"
  )
  assert loss_err <= 1e-5  # log-probs come from our model vs torch: ~1e-6 relative apart
  assert grad_norm > OPTIMIZER.max_grad_norm  # clipping is active
  assert norm_err <= 1e-5
  assert update_err <= 2e-4
  assert metrics["n_tokens"] == mask.sum() and metrics["n_seqs"] == len(ROWS) - 1
  entropy = (setup["hf_entropy"] * mask).sum() / mask.sum()
  assert abs(metrics["entropy"] - entropy) / entropy <= 1e-5
  # The reference is a separate copy: the donated update left it at the initial weights.
  jax.tree.map(np.testing.assert_array_equal, after.ref_params, before.params)
  assert after.step == 1 and after.skipped_updates == 0 and metrics["skipped"] == 0
  assert metrics["lr"] == pytest.approx(OPTIMIZER.learning_rate)


def test_shape_floor_padding_leaves_the_update_unchanged(setup, train_steps):
  """The trainer's shape floors (``rl.update_min_rows/length/patches``) pad an update with filler rows (a copy of
  a row, no loss, no advantage), right-padded positions and padding patches; the update must be the same."""
  state = new_state(setup)
  before = host(state)
  reference, ref_metrics = train_steps[loss_lib.TOKEN_MEAN](new_state(setup), make_batch(setup, 1))
  reference = host(reference)
  rows, extra_rows, extra_len = len(ROWS), 4, 7
  pad_cols = lambda a: np.pad(a, ((0, extra_rows), (0, extra_len)))
  ids = pad_cols(setup["ids"])
  ids[rows:, : setup["ids"].shape[1]] = setup["ids"][0]  # filler rows repeat row 0 (and its image)
  attention = pad_cols(setup["attention"])
  attention[rows:, : setup["attention"].shape[1]] = setup["attention"][0]
  first_row_images = sum(isinstance(p, tuple) for p in ROWS[0])
  grids = np.concatenate([setup["grids"]] + [setup["grids"][:first_row_images]] * extra_rows)
  first_row_patches = int(np.prod(setup["grids"][:first_row_images], axis=1).sum())
  pixels = np.concatenate([setup["pixels"]] + [setup["pixels"][:first_row_patches]] * extra_rows)
  inputs = step_lib.prepare_micro_batches(setup["config"], ids, attention, pixels, grids, 1, patch_multiple=512)
  one = lambda a: a[None]
  batch = step_lib.RLBatch(
    inputs=inputs,
    targets=one(pad_cols(setup["targets"])),
    loss_mask=one(pad_cols(setup["loss_mask"])),
    advantages=one(np.pad(setup["advantages"], (0, extra_rows))),
    old_logp=one(pad_cols(setup["old_logp"])),
    ref_logp=one(pad_cols(setup["ref_logp"])),
  )
  assert inputs.vision.pixel_values.shape[1] == 512 > pixels.shape[0]
  padded, metrics = train_steps[loss_lib.TOKEN_MEAN](state, batch)
  padded = host(padded)
  for key in ("loss", "grad_norm", "n_tokens", "n_seqs", "entropy"):
    assert float(metrics[key]) == pytest.approx(float(ref_metrics[key]), rel=1e-5), key
  update_err = max_rel_error(
    jax.tree.map(np.subtract, padded.params, before.params), jax.tree.map(np.subtract, reference.params, before.params)
  )
  print(f"[rl step] padded to {ids.shape} + 512 patches vs unpadded: update max per-tensor rel {update_err:.2e}")
  assert update_err <= 1e-4


def test_nonfinite_loss_skips_the_update(setup, train_steps):
  train = train_steps[loss_lib.TOKEN_MEAN]
  state = new_state(setup)
  before = host(state)
  advantages = setup["advantages"].copy()
  advantages[3] = np.nan  # row 3 has loss tokens: the loss and every gradient become nan
  state, metrics = train(state, make_batch(setup, 4, advantages))
  skipped = host(state)
  assert not np.isfinite(float(metrics["loss"]))
  assert int(metrics["skipped"]) == 1 and int(metrics["skipped_updates"]) == 1
  assert skipped.step == 1 and skipped.skipped_updates == 1
  jax.tree.map(np.testing.assert_array_equal, skipped.params, before.params)
  jax.tree.map(np.testing.assert_array_equal, skipped.opt_state, before.opt_state)

  state, metrics = train(state, make_batch(setup, 4))  # the next finite batch is applied
  applied = host(state)
  assert int(metrics["skipped"]) == 0 and int(metrics["skipped_updates"]) == 1
  assert applied.step == 2 and applied.skipped_updates == 1
  assert max_rel_error(applied.params, before.params) > 1e-4


@pytest.mark.parametrize("decay_steps", [0, 5])
def test_adamw_matches_torch_with_warmup_and_skip(decay_steps):
  """make_optimizer + apply_gradients on a small tree vs torch AdamW after clip_grad_norm_, with a linear warmup
  (then constant, or transformers' cosine decay to 0 at update 5); a nan gradient in between is skipped without
  touching params, moments or the schedule."""
  import transformers

  config = ts.OptimizerConfig(
    learning_rate=0.05,
    b1=0.8,
    b2=0.95,
    eps=1e-6,
    weight_decay=0.1,
    max_grad_norm=0.5,
    warmup_steps=2,
    decay_steps=decay_steps,
  )
  rng = np.random.default_rng(1)
  params = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=(4,)).astype(np.float32)}
  grads = [
    {k: (s * rng.normal(size=v.shape)).astype(np.float32) for k, v in params.items()}
    for s in (0.1, 3.0, np.nan, 0.2, 2.0)
  ]
  optimizer = ts.make_optimizer(config)
  state = ts.TrainState(
    step=jnp.zeros((), jnp.int32),
    params=jax.tree.map(jnp.asarray, params),
    ref_params=None,
    opt_state=optimizer.init(params),
    rng=jnp.zeros((2,), jnp.uint32),
    skipped_updates=jnp.zeros((), jnp.int32),
  )
  apply = jax.jit(lambda state, grads: step_lib.apply_gradients(state, grads, jnp.float32(0.0), config))

  torch_params = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
  torch_opt = torch.optim.AdamW(torch_params.values(), lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
  # torch's constant-with-warmup schedule, advanced per applied update.
  schedule = torch.optim.lr_scheduler.LambdaLR(torch_opt, lambda n: min(1.0, n / 2))
  if decay_steps:
    schedule = transformers.get_cosine_schedule_with_warmup(torch_opt, num_warmup_steps=2, num_training_steps=5)
  for i, g in enumerate(grads):
    state, metrics = apply(state, g)
    if np.isnan(g["w"]).any():
      assert int(metrics["skipped"]) == 1
      continue
    expected_lr = torch_opt.param_groups[0]["lr"]
    for k, p in torch_params.items():
      p.grad = torch.tensor(g[k])
    expected_norm = float(torch.nn.utils.clip_grad_norm_(torch_params.values(), 0.5))
    torch_opt.step()
    schedule.step()
    assert float(metrics["lr"]) == pytest.approx(expected_lr, rel=1e-6), i
    assert float(metrics["grad_norm"]) == pytest.approx(expected_norm, rel=1e-5), i
    for k, p in torch_params.items():
      np.testing.assert_allclose(np.asarray(state.params[k]), p.detach().numpy(), rtol=1e-5, atol=1e-6)
  assert int(state.step) == 5 and int(state.skipped_updates) == 1


def test_optimizer_state_sharded_like_params():
  config = families.config_from_hf(qt.tiny_config_dict())
  shapes, specs = families.abstract_params(config)
  mesh = mesh_lib.make_mesh(dict(fsdp=4, tensor=2))
  abstract = ts.abstract_train_state(shapes, specs, ts.make_optimizer(OPTIMIZER), mesh, RULES, keep_reference=False)
  q_kernel = ("language_model", "layers_0", "self_attn", "q_proj", "kernel")
  adam = abstract.opt_state[1][0]
  for tree in (abstract.params, adam.mu, adam.nu):
    leaf = functools.reduce(lambda node, key: node[key], q_kernel, tree)
    assert leaf.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    assert leaf.shape == (64, 4, 16)
  assert adam.count.sharding.spec == jax.sharding.PartitionSpec()
  assert abstract.ref_params is None and abstract.step.shape == () and abstract.rng.dtype == jnp.uint32


def test_host_batch_helpers_reject_bad_input(setup):
  config = setup["config"]
  targets, target_mask = step_lib.next_token_targets(np.array([[5, 6, 7]]), np.array([[0, 1, 1]]))
  np.testing.assert_array_equal(targets, [[6, 7, 0]])
  np.testing.assert_array_equal(target_mask, [[1, 1, 0]])
  with pytest.raises(ValueError, match="cannot be split into 3"):
    step_lib.prepare_micro_batches(config, setup["ids"], setup["attention"], setup["pixels"], setup["grids"], 3)
  with pytest.raises(ValueError, match="image tokens"):
    step_lib.prepare_micro_batches(
      config, setup["ids"], setup["attention"], setup["pixels"][:-16], setup["grids"][:-1], 2
    )
  ids, attention = setup["ids"].copy(), setup["attention"]
  ids[ids == qt.IMAGE_TOKEN_ID] = 7  # no image tokens in any row, but images given
  with pytest.raises(ValueError, match="no row holds image tokens|do not add up|account for"):
    step_lib.prepare_micro_batches(config, ids, attention, setup["pixels"], setup["grids"], 2)
  with pytest.raises(ValueError, match="hold no image while others do"):
    rows = [qt.make_row(np.random.default_rng(0), pieces) for pieces in ([3, (1, 4, 4), 2], [4])]
    ids, attention = qt.left_pad(rows)
    pixels = qt.random_pixels([(1, 4, 4)], np.random.default_rng(0), config.model_type)
    step_lib.prepare_micro_batches(config, ids, attention, pixels, np.array([(1, 4, 4)]), 2)
  with pytest.raises(ValueError, match="chunk size"):
    step_lib.StepConfig(logprob_chunk_size=0)
