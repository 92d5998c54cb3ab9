"""Our jitted sampler vs transformers' generate() (PyTorch) on the same CPU, same weights, greedy, fp32.

A batch of 16 prompts, each one 224x224 image (16x16 patches, 64 merged tokens) between ~40 text tokens, generates
exactly 64 new tokens (no stop token; image and video pad tokens suppressed on both sides). Both sides must produce the same tokens. One JSON line reports:

  * tokens/s of both (16 * 64 / wall time of the whole call, prefill included; best of --repeats after a warm-up,
    the two sides timed in alternation since the machine is shared) and the ratio, plus each side's prefill time
    (a 1-token call) and decode rate (the rest);
  * our decode rate (from the difference between a 64-token and a 1-token call) as a fraction of the
    weight-streaming roofline: every decode step must read the decoder layers and the LM head once, so the roofline
    is measured memory bandwidth / those bytes steps per second (bandwidth measured in the same run as the best of
    a large jnp reduction and copy);
  * for context, the compute roofline: a decode step at batch 16 is also 2 * 16 FLOPs per decode parameter of
    skinny matmuls, against the machine's large-matmul peak measured in the same run;
  * a turn-2 continuation (a feedback segment with a new 224x224 image and ~40 text tokens appended to the cache of
    each row, then one token) vs re-prefilling the whole conversation (prompt + 64 tokens + the same segment, then
    one token), with the ratio of their matmul FLOPs (the speedup a FLOP-bound machine can give).

  python bench/sampler_vs_hf.py            # the ~140M configuration (see BENCHMARKS.md)
  python bench/sampler_vs_hf.py --tiny     # tests/qwen_tiny.py's configuration
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from vrrl_jax.checkpoints import hf as hf_ckpt
from vrrl_jax.models import Qwen25VLConfig
from vrrl_jax.sampling.buckets import Buckets
from vrrl_jax.sampling.sampler import Sampler, SamplingConfig, Segment

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import qwen_tiny  # noqa: E402  (the tiny test configuration)
from forward_vs_hf import HF_CONFIG as CONFIG_140M  # noqa: E402  (the forward benchmark's ~140M model)
from forward_vs_hf import IMAGE_TOKEN_ID, PATCH_DIM, VISION_END_ID, VISION_START_ID  # noqa: E402

BATCH = 16
NEW_TOKENS = 64


def build_hf_model(raw_config: dict, seed: int):
  """Random weights with O(1) activations (N(0, 1/fan_in)), so greedy tokens are not degenerate."""
  config = Qwen2_5_VLConfig(**raw_config)
  torch.manual_seed(seed)
  model = Qwen2_5_VLForConditionalGeneration._from_config(config, attn_implementation="sdpa").eval()
  qwen_tiny.reinit(model, seed)
  return model


def random_row(rng, text_before: int, grid, text_after: int, ids: dict) -> list[int]:
  t, h, w = grid
  top = ids["image"] - 4
  return (
    rng.integers(1, top, size=text_before).tolist()
    + [ids["start"]]
    + [ids["image"]] * (t * h * w // 4)
    + [ids["end"]]
    + rng.integers(1, top, size=text_after).tolist()
  )


def make_segments(rng, grid, text_before, text_after, ids) -> list[Segment]:
  segments = []
  for b in range(BATCH):
    row = random_row(rng, text_before + b % 3, grid, text_after + b % 5, ids)
    pixels = rng.standard_normal((int(np.prod(grid)), PATCH_DIM)).astype(np.float32)
    segments.append(Segment(np.array(row), pixels, np.array([grid])))
  return segments


def hf_generate(model, segments, new_tokens: int, pad_id: int, suppressed):
  ids, mask = qwen_tiny.left_pad([s.input_ids.tolist() for s in segments])
  ids[mask == 0] = pad_id
  with torch.inference_mode():
    out = model.generate(
      input_ids=torch.tensor(ids),
      attention_mask=torch.tensor(mask),
      mm_token_type_ids=torch.tensor((ids == model.config.image_token_id).astype(np.int64)),
      pixel_values=torch.tensor(np.concatenate([s.pixel_values for s in segments])),
      image_grid_thw=torch.tensor(np.concatenate([s.image_grid_thw for s in segments])),
      max_new_tokens=new_tokens,
      min_new_tokens=new_tokens,
      do_sample=False,
      pad_token_id=pad_id,
      eos_token_id=None,
      suppress_tokens=list(suppressed),
    )
  return out[:, ids.shape[1] :].numpy()


def best_time(fn, repeats: int) -> tuple[float, object]:
  best, result = float("inf"), None
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    best = min(best, time.perf_counter() - start)
  return best, result


def memory_bandwidth(num_bytes: int, repeats: int) -> float:
  """Best bytes/s of a jnp sum (reads once) and a jnp copy (reads and writes once) over a large array."""
  x = jnp.ones((num_bytes // 4,), jnp.float32)
  total = jax.jit(jnp.sum)
  copy = jax.jit(lambda a: a + 1.0)
  total(x).block_until_ready()
  copy(x).block_until_ready()
  read = min(best_time(lambda: total(x).block_until_ready(), 1)[0] for _ in range(repeats))
  read_write = min(best_time(lambda: copy(x).block_until_ready(), 1)[0] for _ in range(repeats))
  return max(num_bytes / read, 2 * num_bytes / read_write)


def matmul_peak_flops(size: int, repeats: int) -> float:
  """Best fp32 FLOP/s of a large square jnp matmul."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  matmul(a, a).block_until_ready()
  return 2 * size**3 / min(best_time(lambda: matmul(a, a).block_until_ready(), 1)[0] for _ in range(repeats))


def prefill_flops(config: Qwen25VLConfig, params, segments) -> float:
  """Matmul FLOPs of prefilling `segments`: 2 per decoder-layer parameter per token, 2 per vision-block and
  patch-embedding parameter per patch, 2 per merger parameter per merged token (attention scores left out)."""
  count = lambda tree: sum(np.asarray(x).size for x in jax.tree.leaves(tree))
  text = params["language_model"]
  layer_params = count({k: v for k, v in text.items() if k.startswith("layers")})
  vision = params["visual"]
  merger_params = count(vision["merger"])
  patch_params = count(vision) - merger_params
  tokens = sum(len(s) for s in segments)
  patches = sum(s.num_patches for s in segments)
  return 2.0 * (layer_params * tokens + patch_params * patches + merger_params * patches / config.vision.merge_unit)


def decode_param_bytes(params) -> int:
  """Bytes every decode step reads: decoder layers, final norm and LM head (embedding rows are negligible)."""
  text = params["language_model"]
  return int(
    sum(np.asarray(leaf).nbytes for key, sub in text.items() if key != "embed_tokens" for leaf in jax.tree.leaves(sub))
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--tiny", action="store_true", help="tests/qwen_tiny.py's configuration instead of ~140M")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs of each measurement (after a warm-up)")
  parser.add_argument(
    "--max-prefill-patches",
    type=int,
    default=0,
    help="sampler's per-call vision patch budget (0: all images in one call)",
  )
  parser.add_argument("--bandwidth-mib", type=int, default=512)
  parser.add_argument(
    "--torch-threads",
    type=int,
    default=None,
    help="torch.set_num_threads for transformers; default: torch's own (the number of cores)",
  )
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  if args.torch_threads is not None:
    torch.set_num_threads(args.torch_threads)
  load_at_start = os.getloadavg()[0]

  if args.tiny:
    raw = qwen_tiny.tiny_config_dict()
    ids = dict(image=qwen_tiny.IMAGE_TOKEN_ID, start=qwen_tiny.VISION_START_ID, end=qwen_tiny.VISION_END_ID)
    grid, text_before, text_after = (1, 8, 8), 18, 18
  else:
    raw = CONFIG_140M
    ids = dict(image=IMAGE_TOKEN_ID, start=VISION_START_ID, end=VISION_END_ID)
    grid, text_before, text_after = (1, 16, 16), 18, 18
  hf_model = build_hf_model(raw, args.seed)
  # Every image here is one frame of grid[1] x grid[2] patches: the bound an image processor's max_pixels gives.
  config = Qwen25VLConfig.from_hf(hf_model.config, max_frame_patches=grid[1] * grid[2])
  params = jax.device_put(hf_ckpt.params_from_state_dict(hf_model.state_dict(), config))
  rng = np.random.default_rng(args.seed)
  prompts = make_segments(rng, grid, text_before, text_after, ids)
  feedback = make_segments(rng, grid, 8, 30, ids)

  # Image and video pads are never generated (a re-prefill of the conversation would read them as images).
  suppressed = (config.image_token_id, config.video_token_id)

  # Ours: compile every program first.
  buckets = Buckets(max_prefill_patches=args.max_prefill_patches or None)
  sampler = Sampler(config, buckets=buckets)
  greedy = SamplingConfig(temperature=0, max_new_tokens=NEW_TOKENS, suppressed_token_ids=suppressed)
  one_token = SamplingConfig(temperature=0, max_new_tokens=1, suppressed_token_ids=suppressed)
  key = jax.random.key(0)
  run = lambda sampling, segments=prompts: sampler.start(params, segments, sampling, key)
  run(greedy)
  run(one_token)
  hf_generate(hf_model, prompts[:2], 2, 0, suppressed)  # transformers' warm-up

  # The machine is shared: both sides are timed in alternation and each keeps its best run.
  times = {name: [] for name in ("hf", "hf_prefill", "ours", "ours_prefill")}
  for _ in range(args.repeats):
    for name, fn in (
      ("hf", lambda: hf_generate(hf_model, prompts, NEW_TOKENS, 0, suppressed)),
      ("ours", lambda: run(greedy)),
      ("hf_prefill", lambda: hf_generate(hf_model, prompts, 1, 0, suppressed)),
      ("ours_prefill", lambda: run(one_token)),
    ):
      elapsed, result = best_time(fn, 1)
      times[name].append(elapsed)
      if name == "hf":
        hf_tokens = result
      elif name == "ours":
        state, turn = result
  hf_time, hf_prefill_time, ours_time, prefill_time = (
    min(times[k]) for k in ("hf", "hf_prefill", "ours", "ours_prefill")
  )
  tokens_equal = all(np.array_equal(t, hf_tokens[i]) for i, t in enumerate(turn.tokens))
  decode_step = (ours_time - prefill_time) / (NEW_TOKENS - 1)

  # Turn 2: continuation on the cache vs re-prefilling the whole conversation.
  samples = list(range(BATCH))
  whole = [
    Segment(
      np.concatenate([p.input_ids, t, f.input_ids]),
      np.concatenate([p.pixel_values, f.pixel_values]),
      np.concatenate([p.image_grid_thw, f.image_grid_thw]),
    )
    for p, t, f in zip(prompts, turn.tokens, feedback)
  ]

  def continuation():
    first, _ = run(greedy)
    start = time.perf_counter()
    sampler.extend(params, first, samples, feedback, one_token, key)
    return time.perf_counter() - start

  continuation()  # compile
  run(one_token, whole)
  continuation_times, reprefill_times = [], []
  for _ in range(args.repeats):
    continuation_times.append(continuation())
    reprefill_times.append(best_time(lambda: run(one_token, whole), 1)[0])
  continuation_time, reprefill_time = min(continuation_times), min(reprefill_times)

  bandwidth = memory_bandwidth(args.bandwidth_mib << 20, 5)
  load_at_end = os.getloadavg()[0]
  step_bytes = decode_param_bytes(params)
  roofline = BATCH * bandwidth / step_bytes
  # For context: at batch 16 a decode step is also ~2 * 16 * (decode params) FLOPs of skinny matmuls.
  peak_flops = matmul_peak_flops(2048, 3)
  compute_roofline = BATCH * peak_flops / (2 * BATCH * step_bytes / 4)
  ours_rate, hf_rate = BATCH * NEW_TOKENS / ours_time, BATCH * NEW_TOKENS / hf_time
  result = dict(
    bench="sampler_vs_hf",
    config="tiny" if args.tiny else "140M",
    date=datetime.date.today().isoformat(),
    machine=f"{os.cpu_count()}-core {platform.machine()}",
    load_avg_1m=[round(load_at_start, 2), round(load_at_end, 2)],
    jax=jax.__version__,
    torch=torch.__version__,
    torch_threads=torch.get_num_threads(),
    params_m=round(sum(np.asarray(x).size for x in jax.tree.leaves(params)) / 1e6, 1),
    batch=BATCH,
    new_tokens=NEW_TOKENS,
    prompt_tokens=[min(map(len, prompts)), max(map(len, prompts))],
    tokens_equal=tokens_equal,
    hf_tokens_per_s=round(hf_rate, 1),
    ours_tokens_per_s=round(ours_rate, 1),
    speedup=round(ours_rate / hf_rate, 2),
    hf_prefill_s=round(hf_prefill_time, 3),
    hf_decode_tokens_per_s=round(BATCH * (NEW_TOKENS - 1) / (hf_time - hf_prefill_time), 1),
    ours_prefill_s=round(prefill_time, 3),
    ours_decode_tokens_per_s=round(BATCH / decode_step, 1),
    bandwidth_gb_per_s=round(bandwidth / 1e9, 2),
    decode_param_mb=round(step_bytes / 1e6, 1),
    roofline_tokens_per_s=round(roofline, 1),
    roofline_fraction=round(BATCH / decode_step / roofline, 3),
    matmul_peak_gflop_per_s=round(peak_flops / 1e9, 1),
    compute_roofline_tokens_per_s=round(compute_roofline, 1),
    continuation_s=round(continuation_time, 3),
    reprefill_s=round(reprefill_time, 3),
    continuation_speedup=round(reprefill_time / continuation_time, 2),
    continuation_flop_ratio=round(prefill_flops(config, params, whole) / prefill_flops(config, params, feedback), 2),
    max_prefill_patches=buckets.max_prefill_patches,
    programs=sampler.compile_log.counts,
  )
  print(json.dumps(result))


if __name__ == "__main__":
  main()
