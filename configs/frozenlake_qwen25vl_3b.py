"""The released VRRL recipe (VRRL_SPEC section 4) on Qwen2.5-VL-3B, on accelerators.

Convert the checkpoint once, then train:
  python -m vrrl_jax.convert hf-to-orbax --hf-dir /path/Qwen2.5-VL-3B-Instruct-SFT --out /path/qwen25vl3b_orbax
  python -m vrrl_jax.train --config configs/frozenlake_qwen25vl_3b.py \
      --config.init_checkpoint=/path/qwen25vl3b_orbax --workdir gs://BUCKET/runs/vrrl_3b

Upstream starts RL from a multi-turn SFT model (not released); set sft.steps > 0 to warm-start here on
synthetic transcripts instead.
"""

import importlib.util
import pathlib

import ml_collections

_spec = importlib.util.spec_from_file_location(
  "frozenlake_tiny_cpu", pathlib.Path(__file__).with_name("frozenlake_tiny_cpu.py")
)
frozenlake_tiny_cpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(frozenlake_tiny_cpu)


def get_config():
  c = frozenlake_tiny_cpu.get_config()
  # init_checkpoint is required: --config.init_checkpoint=...; tokenizer_dir unset: the tokenizer files next to it.
  c.init_checkpoint = ml_collections.config_dict.placeholder(str)
  c.model = None  # taken from the checkpoint
  # The released recipe: default renders, the vision tower trained too, a constant lr (VRRL_SPEC section 4).
  c.data.update(train_style="default", eval_style="default")
  c.optimizer.update(frozen=(), warmup_steps=0)
  c.model_options = dict(dtype="bfloat16", param_dtype="float32", scan_layers=True, remat_policy="nothing_saveable")
  c.max_sequence_len = 8192
  c.image = dict(min_pixels=3136, max_pixels=12845056)  # the hub preprocessor defaults
  c.mesh = dict(data=1, fsdp=-1, tensor=1)
  c.data.train_source = "release"
  c.sft.steps = 0
  c.rl.update(
    steps=1200,
    prompts_per_step=32,
    samples_per_prompt=8,
    micro_batches=8,
    learning_rate=5e-7,
    max_turns=8,
    max_new_tokens=512,
    temperature=1.0,
    top_p=1.0,
  )
  # No CPU shape floors or sampler bucket overrides: over 1,200 steps each bucket's compile is paid once.
  c.sft.update(min_length=64, min_patches=256)
  c.rl.update(update_min_rows=1, update_min_length=64, update_min_patches=256)
  c.sampler = dict()
  c.rl.buffer.min_size = 32
  c.rl.filter.max_tries = 20
  c.eval.update(maps_per_level=250, max_turns=10, max_new_tokens=512, batch_size=256, before_rl=False)
  c.checkpoint = dict(every=15, keep=3)
  return c
