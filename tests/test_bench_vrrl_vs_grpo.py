"""The VRRL-vs-GRPO sweep's arms: valid configs that differ only in rollout-mode weights (and the seed), with the
arm's own flags winning over the user's."""

import pathlib

import pytest

from vrrl_jax import experiment, run_config
from vrrl_jax.pretrain import TINY_VLM_DIR

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "frozenlake_small_cpu.py")


@pytest.fixture(scope="module")
def sweep(bench_script):
  return bench_script("vrrl_vs_grpo")


def _flat(config) -> dict:
  out = {}

  def walk(prefix, node):
    for key in node.keys():
      value = node[key]
      if hasattr(value, "keys"):
        walk(f"{prefix}{key}.", value)
      else:
        out[f"{prefix}{key}"] = value

  walk("", config)
  return out


def test_rl_arms_differ_only_in_mode_weights_and_are_valid(sweep):
  policy = TINY_VLM_DIR  # any model directory: validation checks that it exists
  configs = {}
  for arm in sweep.ARMS:
    if arm == sweep.SFT_ONLY:
      continue
    config = experiment.load_config(CONFIG, sweep.arm_overrides(arm, 1, policy, []))
    run_config.validate(config)
    configs[arm] = _flat(config)
  base = configs[sweep.VRRL]
  for arm, flat in configs.items():
    differing = {k for k in base if base[k] != flat[k]}
    assert differing <= {f"rl.mode_weights.{m}" for m in ("normal", "random_start", "prefix_buffer")}, (arm, differing)
  weights = {arm: tuple(flat[f"rl.mode_weights.{m}"] for m in ("normal", "random_start", "prefix_buffer")) for arm, flat in configs.items()}  # fmt: skip
  assert weights[sweep.VRRL] == (0.0, 0.6, 0.4)  # VRRL_SPEC: the released weights
  assert weights[sweep.GRPO] == (1.0, 0.0, 0.0)
  assert weights["vrrl_no_masking"] == (0.6, 0.0, 0.4)  # the removed component's share goes to normal rollouts
  assert weights["vrrl_no_buffer"] == (0.4, 0.6, 0.0)
  assert base["sft.steps"] == 0 and base["init_checkpoint"] == str(policy) and base["seed"] == 1
  assert base["eval.maps_per_level"] == 250 and base["eval.before_rl"] is False


def test_the_arm_and_warm_start_flags_win_over_the_users(sweep, tmp_path):
  extra = ["--config.seed=9", "--config.rl.steps=3", "--config.sft.steps=7", "--config.eval.maps_per_level=4"]
  arm = experiment.load_config(CONFIG, sweep.arm_overrides(sweep.GRPO, 2, tmp_path, extra))
  assert (arm.seed, arm.sft.steps, arm.rl.steps, arm.eval.maps_per_level) == (2, 0, 3, 4)
  assert arm.rl.mode_weights.normal == 1.0
  warm = experiment.load_config(CONFIG, sweep.warm_overrides(5, extra))
  assert (warm.seed, warm.rl.steps, warm.sft.steps, warm.eval.maps_per_level) == (5, 0, 7, 4)


def test_a_workdir_holds_one_warm_start(sweep, tmp_path):
  sweep.claim_workdir(tmp_path, 0)
  sweep.claim_workdir(tmp_path, 0)  # resuming the same warm start is fine
  with pytest.raises(SystemExit, match="holds the sweep of warm start 0; warm start 1 needs its own --workdir"):
    sweep.claim_workdir(tmp_path, 1)
  (tmp_path / "second").mkdir()
  sweep.claim_workdir(tmp_path / "second", 1)
