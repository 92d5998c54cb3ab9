"""VRRL's visual grounding on tables and charts (point, crop, look again) at toy scale on a CPU: SFT on scripted
pointing transcripts, VRRL RL, eval on in- and out-of-distribution styles. Minutes on 2 cores.

  python -m vrrl_jax.train --config configs/grounding_tiny_cpu.py --workdir runs/grounding

The tiny architecture of ``frozenlake_tiny_cpu.py`` trained from scratch (the shipped tiny VLM was pretrained on
FrozenLake's perception tasks only, so it starts from nothing here either), with the packaged tokenizer. Scenes are
252 x 252 px (9 x 9 image tokens), crops 84 px (3 x 3 tokens: ``feedback.scaled_crop_side``). A pipeline check, not
a result: a model this small, trained this briefly from scratch, cannot read the labels (BENCHMARKS.md).
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
  "frozenlake_tiny_cpu", pathlib.Path(__file__).with_name("frozenlake_tiny_cpu.py")
)
frozenlake_tiny_cpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(frozenlake_tiny_cpu)


def get_config():
  c = frozenlake_tiny_cpu.get_config()
  c.task = "grounding"
  c.init_checkpoint = ""  # from scratch: the model dict below, the packaged tokenizer
  c.max_sequence_len = 1280  # prompt ~350 tokens + 81 image tokens, turns ~100-160 tokens, crops 9 tokens each
  # Scenes and questions (vrrl_jax.tasks.grounding.DataConfig); train and eval scenes are disjoint by content hash.
  c.data = dict(
    train_size=500,
    eval_size=16,
    train_seed=0,
    eval_seed=1,
    preset="small",
    kinds=("table", "bars", "hbars"),
    crop_side=None,
  )
  c.optimizer.frozen = ()  # a random vision tower must learn
  c.optimizer.lr_scale = dict(visual=0.1)
  # Shape floors: a row holds at most the scene (324 patches) and 3 crops (36 each) = 432 patches, 1280 tokens.
  c.sft.update(steps=60, batch_size=8, learning_rate=1e-3, min_length=1280, min_patches=8 * 432, wrong_route_loss=True)
  c.sft.transcripts = dict(p_correct_first=0.4, p_another_wrong=0.3, max_wrong_points=2, p_neighbour=0.7)
  c.rl.update(
    steps=4,
    prompts_per_step=4,
    samples_per_prompt=4,
    max_new_tokens=160,
    max_turns=4,
    update_min_rows=16,
    update_min_length=1280,
    update_min_patches=16 * 432,
  )
  c.rl.buffer.max_route_turns = 2
  # VRRL's modes plus its grounding roll-in: random_init replays an injected first look near (not on) the target.
  c.rl.mode_weights = dict(normal=0.0, random_start=0.4, prefix_buffer=0.3, random_init=0.3)
  c.rl.reward = dict(
    correct_value=1.0,
    step_cost=0.01,
    reflect_weight=0.9,
    lambda_deg=0.5,
    reflect_lower_clip=0.0,
    correct_rule="box",
    tolerance_px=20.0,
    min_points=1,
    point_format="tool_call",
    prefix_buffer_decision_bonus=0.0,
  )
  c.sampler = dict(min_batch=8, min_cache=1280, min_patches_per_row=432)
  c.eval = dict(
    splits=("eval_id", "eval_ood"),
    examples_per_split=8,
    max_turns=4,
    max_new_tokens=160,
    batch_size=16,
    before_rl=True,
    gallery_episodes=16,
  )
  c.log.console_keys = ("sft/loss", "reward/overall", "reward/correct", "reward/format", "loss/pg", "time/step")
  return c
