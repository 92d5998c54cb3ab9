"""SFT killed mid-phase and resumed repeats the uninterrupted run: the optimizer state comes back from the
checkpoint, and each step's batch is drawn from (seed, step) alone."""

import pathlib
import shutil

from vrrl_jax import experiment, metrics, trainer

REPO = pathlib.Path(__file__).resolve().parents[1]
OVERRIDES = (
  "--config.sft.steps=4",
  "--config.sft.batch_size=8",  # the test session's fake 8-device mesh splits the rows
  "--config.sft.learning_rate=1e-2",
  "--config.rl.steps=0",
  "--config.eval.levels=()",
  "--config.checkpoint.every=1",
  "--config.checkpoint.keep=10",
)


def sft_losses(workdir):
  return [(r["step"], r["sft/loss"]) for r in metrics.read_metrics(workdir) if "sft/loss" in r]


def test_sft_resumed_mid_phase_repeats_the_uninterrupted_run(tmp_path):
  config = experiment.load_config(REPO / "configs" / "frozenlake_tiny_cpu.py", OVERRIDES)
  straight, crashed = tmp_path / "straight", tmp_path / "crashed"
  trainer.run(config, str(straight))
  trainer.run(config, str(crashed))
  for step in (2, 3, 4):  # as if killed after the checkpoint of step 1
    shutil.rmtree(crashed / "checkpoints" / str(step))
  trainer.run(config, str(crashed))

  expected = sft_losses(straight)
  assert [s for s, _ in expected] == [1, 2, 3, 4]
  assert sft_losses(crashed) == expected  # bit for bit: same programs, same inputs, same devices
