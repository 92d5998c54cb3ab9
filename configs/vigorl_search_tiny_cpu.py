"""ViGoRL's multi-turn zoom-in on synthetic visual search, at toy scale on a CPU: SFT on search-tree style
transcripts, GRPO (ViGoRL's RL: normal rollouts, k3 KL, no replay buffer), eval in and out of distribution.

  python -m vrrl_jax.train --config configs/vigorl_search_tiny_cpu.py --workdir runs/vigorl_search

A 1008 x 1008 canvas with one small target among 20-40 distractors, seen at 252 x 252 (the tiny model's whole image
budget, 9 x 9 tokens), where the target is a ~5 px blob; a ``search_coordinate`` call returns an 84 px window of the
view cut from the full-resolution canvas and resized to 252 px, where it is ~15 px. Questions: the target's colour
or shape (string match) or where it is (point in box). Starts from the shipped tiny VLM (decoder and tokenizer; its
vision tower trains at 0.1x). Set ``data.protocol="grounded_thinking"`` for the single-turn form.
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
  c.task = "vigorl"
  # The longest SFT transcript (2 wrong looks, the right one, the answer) is ~1,320 tokens: a prompt of ~260 (81 image
  # tokens), looks of up to ~165 tokens each followed by a crop turn of ~105 (81 image tokens).
  c.max_sequence_len = 1408
  # vrrl_jax.tasks.vigorl.DataConfig: scenes, splits (disjoint by scene identity) and ViGoRL's crop settings.
  c.data = dict(
    kind="search",
    preset="small",
    questions=("color", "shape", "locate"),
    train_size=1000,
    eval_size=32,
    train_seed=0,
    eval_seed=1,
    protocol="multi_turn",
    offset=42,
    crop_size=252,
    dot=False,  # ViGoRL's visual-search setting: no dot
    max_images=5,
  )
  c.optimizer.frozen = ()
  c.optimizer.lr_scale = dict(visual=0.1)
  c.optimizer.grad_clip_norm = 0.2  # ViGoRL's multi-turn RL clip (SFT shares the optimizer settings)
  # Rows hold the scene and at most 3 crops: 4 x 324 patches.
  c.sft.update(steps=200, batch_size=8, learning_rate=1e-3, min_length=896, min_patches=8 * 4 * 324)
  c.sft.wrong_route_loss = True
  c.sft.transcripts = dict(p_wrong_first=0.5, p_another_wrong=0.2, max_wrong=2)
  c.rl.update(
    steps=8,
    prompts_per_step=4,
    samples_per_prompt=8,  # ViGoRL's multi-turn group size
    # 4 micro-batches of 8 rows: the update's memory grows by ~0.6 GB per row of 1,408 tokens (measured peak RSS
    # 6.4 GB at 8 rows, 11.3 GB at 16; 32 in one micro-batch ran out of the machine's 24 GB).
    micro_batches=4,
    learning_rate=1e-4,
    max_new_tokens=192,  # SFT turns are up to ~170 tokens with the tiny tokenizer (a correction's think + the call)
    max_turns=5,
    temperature=1.0,
    top_p=0.99,
    update_min_rows=32,
    update_min_length=1408,
    update_min_patches=32 * 5 * 324,
    truncated_loss=False,  # ViGoRL: a truncated response carries no loss
  )
  c.rl.mode_weights = dict(normal=1.0, random_start=0.0, prefix_buffer=0.0)
  c.rl.loss.update(kl_coef=0.01, clip_low=0.2, clip_high=0.2)
  c.rl.reward = dict()  # ViGoRL's scorers have no options
  c.sampler = dict(min_batch=8, min_cache=1408, min_patches_per_row=324)
  c.eval = dict(
    splits=("eval_id", "eval_ood"),
    examples_per_split=16,
    max_turns=5,
    max_new_tokens=192,  # SFT turns are up to ~170 tokens with the tiny tokenizer (a correction's think + the call)
    batch_size=16,
    before_rl=True,
    gallery_episodes=12,
  )
  c.log.console_keys = ("sft/loss", "reward/overall", "reward/accuracy", "reward/format", "loss/pg", "time/step")
  return c
