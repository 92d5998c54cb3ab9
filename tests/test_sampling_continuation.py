"""Multi-turn continuation through the KV cache equals recomputing the whole conversation with transformers.

Three prompts with images of different sizes (each fanned out to two samples) are sampled for a turn; then a
subset continues with a feedback segment holding an image (rows that stopped on a stop token and rows that ran
out of budget both continue; the dropped row stays idle in place, since the batch bucket is unchanged), samples a
second turn (some after their first turn was cut short by ``Sampler.rewind``, as at a stop string), and two
samples continue with a second feedback image for a third turn (compacted into a smaller
batch). Every logit the sampler drew a token from must equal the logit at the
same position of ONE transformers forward over each sample's whole conversation (left-padded batch, all images),
and the returned log-probs must be log-softmax of those reference logits with the suppressed tokens removed.
"""

import jax
import numpy as np
import pytest
import torch

import qwen_tiny as qt
from vrrl_jax.checkpoints import hf as hf_ckpt
from vrrl_jax.models import families
from vrrl_jax.sampling.buckets import Buckets
from vrrl_jax.sampling.sampler import LENGTH, STOP, Sampler, SamplingConfig, Segment

TOLERANCE = 1e-4
SUPPRESSED = (qt.VISION_START_ID, qt.VISION_END_ID, qt.IMAGE_TOKEN_ID, qt.VIDEO_TOKEN_ID)
STOP_IDS = tuple(range(100, 140))
CUT = "cut"  # a turn rewound by a few tokens before the next segment  # ~16% of the vocabulary: some rows stop early, others run to the budget


@pytest.fixture(scope="module", params=qt.FAMILIES)
def hf_model(request):
  return qt.build_hf_model(seed=5, family=request.param)


def segment(rng, pieces, family):
  grids = [p for p in pieces if not isinstance(p, int)]
  pixels = qt.random_pixels(grids, rng, family) if grids else None
  return Segment(np.array(qt.make_row(rng, pieces)), pixels, np.array(grids) if grids else None)


def test_three_turn_continuation_equals_full_forward(hf_model):
  config = families.config_from_hf(hf_model.config.to_dict())
  family = config.model_type
  params = hf_ckpt.params_from_state_dict(hf_model.state_dict(), config)
  # A small patch budget makes the prefill run in several calls over row subsets.
  sampler = Sampler(config, buckets=Buckets(max_prefill_patches=48))
  sampling = SamplingConfig(temperature=1.0, max_new_tokens=6, stop_token_ids=STOP_IDS, suppressed_token_ids=SUPPRESSED)
  rng = np.random.default_rng(1)
  prompts = [
    segment(rng, [3, (1, 4, 6), 2], family),
    segment(rng, [2, (1, 6, 4), 3, (1, 4, 4), 1], family),
    segment(rng, [9, (1, 4, 4), 5], family),
  ]
  n = 2
  conversations = {
    s: [(p.input_ids, p.pixel_values, p.image_grid_thw, False)]
    for s, p in enumerate(p for p in prompts for _ in range(n))
  }
  generated = {s: [] for s in conversations}  # (tokens, log_probs, logits)

  def record(turn):
    for s, tokens, log_probs, logits, reason in zip(
      turn.sample_ids, turn.tokens, turn.log_probs, turn.logits, turn.finish_reasons
    ):
      conversations[s].append((tokens, None, None, True))
      generated[s].append((tokens, log_probs, logits, reason))

  state, turn = sampler.start(params, prompts, sampling, jax.random.key(0), n_per_prompt=n, record_logits=True)
  record(turn)
  reasons = dict(zip(turn.sample_ids, turn.finish_reasons))
  assert STOP in reasons.values() and LENGTH in reasons.values(), reasons

  # Turn 2: five samples continue (stopped and out-of-budget ones among them), one is dropped.
  stopped = [s for s, r in reasons.items() if r == STOP]
  ran_out = [s for s, r in reasons.items() if r == LENGTH]
  dropped = next(s for s in conversations if s not in (stopped[0], ran_out[0]))
  turn2 = [s for s in conversations if s != dropped]
  # Some turns are cut short first (as at a stop string): 0-2 tokens each, at least one token kept.
  cuts = [min(int(s) % 3, len(generated[s][0][0]) - 1) for s in turn2]
  assert any(cuts)
  state = sampler.rewind(state, turn2, cuts)
  for s, cut in zip(turn2, cuts):
    if cut:
      tokens, log_probs, logits, _ = generated[s][0]
      generated[s][0] = (tokens[:-cut], log_probs[:-cut], logits[:-cut], CUT)
      conversations[s][-1] = (tokens[:-cut], None, None, True)
  segments2 = [segment(rng, [2 + int(s), (1, 4, 4) if s % 2 else (1, 4, 6), 3], family) for s in turn2]
  for s, seg in zip(turn2, segments2):
    conversations[s].append((seg.input_ids, seg.pixel_values, seg.image_grid_thw, False))
  state, turn = sampler.extend(params, state, turn2, segments2, sampling, jax.random.key(1), record_logits=True)
  record(turn)

  # Turn 3: two samples, in a different order, with a second feedback image each.
  turn3 = [turn2[-1], turn2[0]]
  segments3 = [segment(rng, [1, (1, 6, 4), 4], family), segment(rng, [4, (1, 4, 4), 1], family)]
  for s, seg in zip(turn3, segments3):
    conversations[s].append((seg.input_ids, seg.pixel_values, seg.image_grid_thw, False))
  state, turn = sampler.extend(
    params, state, turn3, segments3, sampling, jax.random.key(2), record_logits=True, max_new_tokens=[6, 3]
  )
  record(turn)
  assert len(turn.tokens[1]) <= 3

  # The cache rows hold exactly the conversations so far.
  for row, s in enumerate(state.sample_ids):
    if s >= 0:
      assert state.lengths[row] == sum(len(part[0]) for part in conversations[s])
  np.testing.assert_array_equal(np.asarray(state.cache.lengths), state.lengths)

  # Reference: one transformers forward over every whole conversation.
  samples = sorted(conversations)
  rows = [np.concatenate([part[0] for part in conversations[s]]) for s in samples]
  ids, mask = qt.left_pad([r.tolist() for r in rows])
  pixels = np.concatenate([part[1] for s in samples for part in conversations[s] if part[1] is not None])
  grids = np.concatenate([part[2] for s in samples for part in conversations[s] if part[2] is not None])
  with torch.no_grad():
    ref = hf_model(
      input_ids=torch.tensor(ids),
      attention_mask=torch.tensor(mask),
      mm_token_type_ids=torch.tensor((ids == qt.IMAGE_TOKEN_ID).astype(np.int64)),
      pixel_values=torch.tensor(pixels),
      image_grid_thw=torch.tensor(grids),
    ).logits.numpy()

  ours, theirs, log_prob_errors, checked_tokens = [], [], [], 0
  for b, s in enumerate(samples):
    offset = ids.shape[1] - len(rows[b])
    index, turn_number = 0, 0
    for tokens, _, _, is_generated in conversations[s]:
      if is_generated:
        tokens_, log_probs, logits, reason = generated[s][turn_number]
        turn_number += 1
        reference = ref[b, offset + index - 1 : offset + index - 1 + len(tokens)]
        ours.append(logits)
        theirs.append(reference)
        masked = reference.astype(np.float64).copy()
        masked[:, list(SUPPRESSED)] = -np.inf
        expected = masked - np.logaddexp.reduce(masked, axis=-1, keepdims=True)
        log_prob_errors.append(np.abs(log_probs - expected[np.arange(len(tokens)), tokens]).max(initial=0))
        checked_tokens += len(tokens)
        # Finish reasons: a stop token ends a "stop" turn and appears nowhere else.
        is_stop = np.isin(tokens, STOP_IDS)
        assert is_stop[:-1].sum() == 0
        if reason != CUT:
          assert (reason == STOP) == bool(is_stop[-1])
        assert not np.isin(tokens, SUPPRESSED).any()
      index += len(tokens)
  error = qt.rel_error(np.concatenate(ours), np.concatenate(theirs))
  print(
    f"[sampling] 3-turn continuation vs full transformers forward over {checked_tokens} sampled tokens: "
    f"rel {error:.2e}, log-prob abs {max(log_prob_errors):.2e}"
  )
  assert checked_tokens >= 30
  assert error <= TOLERANCE
  assert max(log_prob_errors) <= 1e-4
  # Rows were gathered twice: the fan-out and the turn-3 compaction (turn 2 ran in place).
  assert sampler.compile_log.counts["select_rows"] == 2
  assert state.cache.key.shape[1] == 2
