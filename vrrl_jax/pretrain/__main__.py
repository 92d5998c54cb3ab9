r"""Perception pretraining; a killed run restarted with the same command resumes from its last checkpoint.

python -m vrrl_jax.pretrain --config configs/pretrain_tiny.py --workdir runs/pretrain
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and the held-out gallery go.")


def main(argv) -> None:
  del argv
  from vrrl_jax import experiment, run_config
  from vrrl_jax.pretrain import run

  experiment.setup_console()
  if FLAGS.config is None or FLAGS.workdir is None:
    raise app.UsageError("--config and --workdir are required")
  experiment.enable_compilation_cache()
  try:
    run.run(FLAGS.config, FLAGS.workdir)
  except run_config.ConfigError as e:
    raise SystemExit(f"bad config: {e}") from None


if __name__ == "__main__":
  app.run(main)
