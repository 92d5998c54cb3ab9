"""Our jitted forward vs transformers' PyTorch model on the same CPU, for Qwen2.5-VL or Qwen3-VL (``--family``).

One run builds a ~140M-parameter model of the family from a config (random weights, no hub), converts its state_dict with
`params_from_state_dict`, checks that both give the same logits, times our jitted forward and transformers' with
eager and with SDPA attention (interleaved, so all see the same machine load; torch at its default thread count
unless --torch-threads) and measures the machine's fp32 matmul peak with a large jnp matmul in the same rounds.
It prints ONE JSON line.

FLOPs are counted analytically (`forward_flops`): every matmul of the vision tower, the decoder and the LM head,
plus the attention score and value matmuls over the key/value pairs the model must look at (within each window or
frame for vision, the causal triangle for text). Elementwise work (norms, softmax, rotary, GELU/SiLU) is left out.

  python bench/forward_vs_hf.py                       # Qwen2.5-VL, the issue's configuration; see BENCHMARKS.md
  python bench/forward_vs_hf.py --family qwen3_vl     # the same sizes as a Qwen3-VL (DeepStack at 3 blocks)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from vrrl_jax.checkpoints import hf as hf_ckpt
from vrrl_jax.models import families

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import qwen_tiny  # noqa: E402  (its reinit: the tests' O(1)-activation random weights)

VOCAB = 32000
IMAGE_TOKEN_ID, VIDEO_TOKEN_ID, VISION_START_ID, VISION_END_ID = VOCAB - 4, VOCAB - 3, VOCAB - 2, VOCAB - 1
PATCH_DIMS = {"qwen2_5_vl": 3 * 2 * 14 * 14, "qwen3_vl": 3 * 2 * 16 * 16}

QWEN25_CONFIG = dict(
  model_type="qwen2_5_vl",
  text_config=dict(
    vocab_size=VOCAB,
    hidden_size=768,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_key_value_heads=4,
    rms_norm_eps=1e-6,
    max_position_embeddings=4096,
    hidden_act="silu",
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]},
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
  ),
  vision_config=dict(
    depth=6,
    hidden_size=384,
    intermediate_size=1024,
    num_heads=6,
    hidden_act="silu",
    in_channels=3,
    patch_size=14,
    temporal_patch_size=2,
    spatial_merge_size=2,
    window_size=112,
    fullatt_block_indexes=[2, 5],
    out_hidden_size=768,
    tokens_per_second=2,
  ),
  image_token_id=IMAGE_TOKEN_ID,
  video_token_id=VIDEO_TOKEN_ID,
  vision_start_token_id=VISION_START_ID,
  vision_end_token_id=VISION_END_ID,
  tie_word_embeddings=False,
)
QWEN3_CONFIG = dict(
  model_type="qwen3_vl",
  text_config=dict(
    vocab_size=VOCAB,
    hidden_size=768,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_key_value_heads=4,
    head_dim=64,
    rms_norm_eps=1e-6,
    max_position_embeddings=4096,
    hidden_act="silu",
    attention_bias=False,
    rope_parameters={
      "rope_type": "default",
      "rope_theta": 5000000.0,
      "mrope_section": [12, 10, 10],
      "mrope_interleaved": True,
    },
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
  ),
  vision_config=dict(
    depth=6,
    hidden_size=384,
    intermediate_size=1024,
    num_heads=6,
    hidden_act="gelu_pytorch_tanh",
    in_channels=3,
    patch_size=16,
    temporal_patch_size=2,
    spatial_merge_size=2,
    out_hidden_size=768,
    num_position_embeddings=2304,
    deepstack_visual_indexes=[1, 3, 5],
  ),
  image_token_id=IMAGE_TOKEN_ID,
  video_token_id=VIDEO_TOKEN_ID,
  vision_start_token_id=VISION_START_ID,
  vision_end_token_id=VISION_END_ID,
  tie_word_embeddings=False,
)
HF_CONFIGS = {"qwen2_5_vl": QWEN25_CONFIG, "qwen3_vl": QWEN3_CONFIG}
HF_CLASSES = {
  "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration"),
  "qwen3_vl": ("Qwen3VLConfig", "Qwen3VLForConditionalGeneration"),
}

# Two images (32x32 patches, 256 merged tokens each) between text runs: 1,000 tokens in all.
GRIDS = [(1, 32, 32), (1, 32, 32)]
TEXT_RUNS = [200, 100, 184]


def build_hf_model(family: str, seed: int, attn_implementation: str):
  """Random weights scaled so activations stay O(1) (`qwen_tiny.reinit`: N(0, 1/fan_in) weights), which makes
  relative errors meaningful; transformers' default init (std 0.02) shrinks the signal layer by layer."""
  config_cls, model_cls = (getattr(transformers, name) for name in HF_CLASSES[family])
  config = config_cls(**HF_CONFIGS[family])
  torch.manual_seed(seed)
  model = model_cls._from_config(config, attn_implementation=attn_implementation).eval()
  qwen_tiny.reinit(model, seed)
  return model


def build_inputs(rng: np.random.Generator, patch_dim: int):
  """input_ids [1, S] (text runs around <|vision_start|> pads <|vision_end|>), pixel_values, image_grid_thw."""
  row = rng.integers(1, IMAGE_TOKEN_ID, size=TEXT_RUNS[0]).tolist()
  for grid, text_len in zip(GRIDS, TEXT_RUNS[1:]):
    t, h, w = grid
    row += [VISION_START_ID] + [IMAGE_TOKEN_ID] * (t * h * w // 4) + [VISION_END_ID]
    row += rng.integers(1, IMAGE_TOKEN_ID, size=text_len).tolist()
  ids = np.array([row], np.int64)
  pixels = rng.standard_normal((sum(t * h * w for t, h, w in GRIDS), patch_dim)).astype(np.float32)
  return ids, pixels, np.array(GRIDS, np.int64)


def forward_flops(config, seq_len: int, grids) -> dict[str, float]:
  """Matmul FLOPs (2 per multiply-add) of one forward, by part. Qwen2.5-VL: window attention except in the full
  blocks, a gated vision MLP (3 matrices); Qwen3-VL: whole-frame attention in every block, a plain MLP (2 matrices)
  and a DeepStack merger per listed block."""
  v, t = config.vision, config.text
  qwen3 = config.model_type == "qwen3_vl"
  patches = sum(a * b * c for a, b, c in grids)
  tokens = patches // v.merge_unit
  frame_patches = [b * c for a, b, c in grids for _ in range(a)]
  # Keys each query looks at, summed over queries: windows (all full here) / whole frames.
  frame_pairs = sum(n * n for n in frame_patches)
  if qwen3:
    num_full, window_pairs, mlp_matrices, mergers = v.depth, 0, 2, 1 + len(v.deepstack_visual_indexes)
  else:
    window_patches = (v.window_merged * v.spatial_merge_size) ** 2
    window_pairs = sum(n * min(n, window_patches) for n in frame_patches)
    num_full, mlp_matrices, mergers = len(v.fullatt_block_indexes), 3, 1
  vision_dense = (
    2
    * patches
    * (
      v.patch_dim * v.hidden_size
      + v.depth
      * (
        v.hidden_size * 3 * v.hidden_size
        + v.hidden_size * v.hidden_size
        + mlp_matrices * v.hidden_size * v.intermediate_size
      )
    )
  )
  merged = v.hidden_size * v.merge_unit
  vision_dense += 2 * tokens * mergers * (merged * merged + merged * v.out_hidden_size)
  vision_attn = 4 * v.hidden_size * (num_full * frame_pairs + (v.depth - num_full) * window_pairs)
  d, hd = t.hidden_size, t.head_dim
  qkvo = d * (2 * t.num_attention_heads * hd + 2 * t.num_key_value_heads * hd)
  text_dense = 2 * seq_len * t.num_hidden_layers * (qkvo + 3 * d * t.intermediate_size)
  text_attn = 4 * t.num_attention_heads * hd * t.num_hidden_layers * seq_len * (seq_len + 1) // 2
  lm_head = 2 * seq_len * d * t.vocab_size
  parts = dict(
    vision_dense=vision_dense,
    vision_attention=vision_attn,
    text_dense=text_dense,
    text_attention=text_attn,
    lm_head=lm_head,
  )
  return {k: float(x) for k, x in parts.items()}


def matmul_timer(size: int):
  """A function timing one fp32 jnp matmul of two [size, size] matrices (compiled and warmed up here)."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  matmul(a, b).block_until_ready()
  return lambda: _timed(lambda: matmul(a, b).block_until_ready())


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=5, help="timed runs of each forward (after one warm-up)")
  parser.add_argument(
    "--torch-threads",
    type=int,
    default=None,
    help="torch.set_num_threads; default: leave torch's default (the number of cores)",
  )
  parser.add_argument(
    "--hf-attn",
    default="eager,sdpa",
    help="comma-separated transformers attn_implementations to time; the first one gives "
    "ratio_hf_over_ours (the issue compares against eager)",
  )
  parser.add_argument("--peak-size", type=int, default=2048, help="side of the square matmul for the peak")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--family", default="qwen2_5_vl", choices=sorted(HF_CONFIGS))
  args = parser.parse_args()
  attn_impls = args.hf_attn.split(",")
  if not attn_impls or any(a not in ("eager", "sdpa") for a in attn_impls):
    parser.error(f"--hf-attn takes eager and/or sdpa, got {args.hf_attn!r}")
  if args.torch_threads is not None:
    torch.set_num_threads(args.torch_threads)

  hf_models = {attn_impls[0]: build_hf_model(args.family, args.seed, attn_impls[0])}
  model_cls = getattr(transformers, HF_CLASSES[args.family][1])
  for attn in attn_impls[1:]:  # same weights, other attention kernel
    hf_models[attn] = model_cls._from_config(hf_models[attn_impls[0]].config, attn_implementation=attn).eval()
    hf_models[attn].load_state_dict(hf_models[attn_impls[0]].state_dict())
  hf_model = hf_models[attn_impls[0]]
  ids, pixels, grids = build_inputs(np.random.default_rng(args.seed), PATCH_DIMS[args.family])
  hf_kwargs = dict(
    input_ids=torch.tensor(ids),
    attention_mask=torch.ones_like(torch.tensor(ids)),
    mm_token_type_ids=torch.tensor((ids == IMAGE_TOKEN_ID).astype(np.int64)),
    pixel_values=torch.tensor(pixels),
    image_grid_thw=torch.tensor(grids),
  )

  def hf_forward(model):
    with torch.inference_mode():
      return model(**hf_kwargs).logits

  config = families.config_from_hf(hf_model.config.to_dict())
  params = jax.device_put(hf_ckpt.params_from_state_dict(hf_model.state_dict(), config))
  num_params = sum(p.numel() for p in hf_model.parameters())
  inputs, _ = families.prepare_inputs(config, ids, pixel_values=pixels, image_grid_thw=grids)
  inputs = jax.device_put(inputs)
  model = families.build(config)
  forward = jax.jit(lambda p, x: model.apply({"params": p}, x, method="forward").logits)

  def our_forward():
    return forward(params, inputs).block_until_ready()

  compile_start = time.perf_counter()
  ours = np.asarray(our_forward()).astype(np.float64)  # warm-up (compiles)
  compile_s = time.perf_counter() - compile_start
  rel_errs = {}
  for attn, model in hf_models.items():  # warm-ups
    ref = hf_forward(model).numpy()
    rel_errs[attn] = float(f"{np.abs(ours - ref).max() / np.abs(ref).max():.3g}")

  time_matmul = matmul_timer(args.peak_size)
  hf_times, our_times, matmul_times = {attn: [] for attn in hf_models}, [], []
  for _ in range(args.repeats):  # interleaved, so a load spike from other jobs hits all of them alike
    for attn, model in hf_models.items():
      hf_times[attn].append(_timed(lambda: hf_forward(model)))
    our_times.append(_timed(our_forward))
    matmul_times.extend(time_matmul() for _ in range(3))
  peak = 2 * args.peak_size**3 / min(matmul_times) / 1e9

  flops = forward_flops(config, ids.shape[1], grids.tolist())
  total_flops = sum(flops.values())
  hf_s = {attn: statistics.median(t) for attn, t in hf_times.items()}
  ours_s = statistics.median(our_times)
  achieved = total_flops / ours_s / 1e9
  print(
    json.dumps(
      dict(
        date=datetime.date.today().isoformat(),
        bench="forward_vs_hf",
        family=args.family,
        machine=platform.processor() or platform.machine(),
        cpus=os.cpu_count(),
        jax=jax.__version__,
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        params=num_params,
        seq_len=int(ids.shape[1]),
        image_patches=int(pixels.shape[0]),
        repeats=args.repeats,
        ours_s=round(ours_s, 4),
        **{f"hf_{attn}_s": round(t, 4) for attn, t in hf_s.items()},
        ratio_hf_over_ours=round(hf_s[attn_impls[0]] / ours_s, 3),
        ratio_vs=attn_impls[0],
        **{f"ratio_hf_{attn}_over_ours": round(t / ours_s, 3) for attn, t in hf_s.items()},
        ours_s_all=[round(x, 3) for x in our_times],
        **{f"hf_{attn}_s_all": [round(x, 3) for x in t] for attn, t in hf_times.items()},
        ours_compile_s=round(compile_s, 2),
        logits_rel_err=rel_errs,
        flops_counting="analytic_matmuls",
        gflop=round(total_flops / 1e9, 2),
        gflop_by_part={k: round(x / 1e9, 2) for k, x in flops.items()},
        ours_gflops=round(achieved, 1),
        matmul_peak_gflops=round(peak, 1),
        peak_matmul_size=args.peak_size,
        peak_rule="best of 3 matmuls after each round",
        ours_fraction_of_peak=round(achieved / peak, 3),
      )
    )
  )


if __name__ == "__main__":
  main()
