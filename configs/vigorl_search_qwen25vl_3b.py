"""ViGoRL's released multi-turn RL recipe (GROUNDING_SPEC section 2) on Qwen2.5-VL-3B, synthetic visual search, on
accelerators.

  python -m vrrl_jax.convert hf-to-orbax --hf-dir /path/Qwen2.5-VL-3B-Instruct --out /path/qwen25vl3b_orbax
  python -m vrrl_jax.train --config configs/vigorl_search_qwen25vl_3b.py \
      --config.init_checkpoint=/path/qwen25vl3b_orbax --workdir gs://BUCKET/runs/vigorl_search

The recipe: GRPO with group 8, temperature 1.0, top-p 0.99, lr 1e-6, weight decay 0.01, grad-norm clip 0.2, 5% warmup
(25 of 500 steps), k3 KL as a loss at 0.01, the vision tower frozen, 128 prompts per step, up to 500 steps; at most 5
images and 5 rounds; visual search crops: offset 182, crop 672, no dot. A truncated response carries no loss.
Scenes are the large preset (2,240 px canvases) seen at 980 px (``max_pixels`` 1280 x 28 x 28). Departures:
ViGoRL validates at temperature 0.5, our eval is greedy; its SFT data come from a teacher's search trees, ours from
the scene generator (``vrrl_jax.tasks.vigorl.transcripts``). Size it with ``python -m vrrl_jax.plan``.
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
  "frozenlake_qwen25vl_3b", pathlib.Path(__file__).with_name("frozenlake_qwen25vl_3b.py")
)
frozenlake_qwen25vl_3b = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(frozenlake_qwen25vl_3b)


def get_config():
  c = frozenlake_qwen25vl_3b.get_config()
  c.task = "vigorl"
  c.max_sequence_len = 8192  # the scene (1,225 tokens) + 4 crops (576 each) + 5 turns
  c.image = dict(min_pixels=3136, max_pixels=1280 * 28 * 28)
  c.data = dict(
    kind="search",
    preset="large",
    questions=("color", "shape", "locate"),
    train_size=20000,
    eval_size=250,
    train_seed=0,
    eval_seed=1,
    protocol="multi_turn",
    offset=182,
    crop_size=672,
    dot=False,
    max_images=5,
  )
  c.optimizer.update(frozen=("visual",), weight_decay=0.01, grad_clip_norm=0.2, warmup_steps=25, lr_scale={})
  c.sft.update(steps=300, batch_size=32, micro_batches=8, learning_rate=1e-5, wrong_route_loss=True)
  c.sft.transcripts = dict(p_wrong_first=0.5, p_another_wrong=0.3, max_wrong=2)
  c.rl.update(
    steps=500,
    prompts_per_step=128,
    samples_per_prompt=8,
    learning_rate=1e-6,
    max_turns=5,
    max_new_tokens=512,
    temperature=1.0,
    top_p=0.99,
    truncated_loss=False,
  )
  c.rl.mode_weights = dict(normal=1.0, random_start=0.0, prefix_buffer=0.0)
  c.rl.loss.update(kl_coef=0.01, clip_low=0.2, clip_high=0.2)
  c.rl.reward = dict()
  c.eval = dict(
    splits=("eval_id", "eval_ood"),
    examples_per_split=250,
    max_turns=5,
    max_new_tokens=512,
    batch_size=256,
    before_rl=False,
    gallery_episodes=48,
  )
  c.log.console_keys = ("sft/loss", "reward/overall", "reward/accuracy", "reward/format", "loss/pg", "time/step")
  return c
