"""VRRL's grounding task on tables and charts (docs/grounding.md) with Qwen2.5-VL-3B, on accelerators.

  python -m vrrl_jax.convert hf-to-orbax --hf-dir /path/Qwen2.5-VL-3B-Instruct --out /path/qwen25vl3b_orbax
  python -m vrrl_jax.train --config configs/grounding_qwen25vl_3b.py \
      --config.init_checkpoint=/path/qwen25vl3b_orbax --workdir W

The FrozenLake 3B recipe's method settings (VRRL_SPEC section 4: group 8, lr 5e-7, PPO dual clip, k3 KL 0.01, the
released mode weights) with VRRL's grounding budget (8 turns of 500 tokens) on the large scene preset (896 x 672 px,
a multiple of 28 and 32, so the processor does not resize scenes; VRRL's 200 px crops). VRRL released no grounding
data or recipe numbers, so the SFT warm start (scripted pointing transcripts) and the random_init weight are ours.
Size it for a slice with ``python -m vrrl_jax.plan --config configs/grounding_qwen25vl_3b.py --topology ...``.
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
  c.task = "grounding"
  c.max_sequence_len = 8192
  c.image = dict(min_pixels=3136, max_pixels=896 * 672)  # the large preset's scenes, unresized
  c.data = dict(
    train_size=20000,
    eval_size=250,
    train_seed=0,
    eval_seed=1,
    preset="large",
    kinds=("table", "bars", "hbars"),
    crop_side=None,
  )
  c.sft.update(steps=300, batch_size=32, micro_batches=8, learning_rate=1e-5, wrong_route_loss=True)
  c.sft.transcripts = dict(p_correct_first=0.3, p_another_wrong=0.3, max_wrong_points=2, p_neighbour=0.7)
  c.rl.update(max_turns=8, max_new_tokens=500)
  c.rl.mode_weights = dict(normal=0.0, random_start=0.5, prefix_buffer=0.3, random_init=0.2)
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
  c.eval = dict(
    splits=("eval_id", "eval_ood"),
    examples_per_split=250,
    max_turns=8,
    max_new_tokens=500,
    batch_size=256,
    before_rl=False,
    gallery_episodes=48,
  )
  c.log.console_keys = ("sft/loss", "reward/overall", "reward/correct", "reward/format", "loss/pg", "time/step")
  return c
