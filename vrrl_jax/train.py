r"""VRRL training: multi-turn SFT warm start, then VRRL RL (GRPO with RandomTurnMasking and buffered roll-ins),
then evaluation. One command; a killed run restarted with the same command resumes from its last checkpoint.

  python -m vrrl_jax.train --config configs/frozenlake_tiny_cpu.py --workdir runs/demo
  python -m vrrl_jax.train --config configs/frozenlake_qwen25vl_3b.py --config.init_checkpoint=CKPT --workdir W

The loop follows VRRL_SPEC section 4 step by step; each step is a section below. Host work (episodes, rewards,
buffer, masks) is numpy; device work is the jitted sampler, log-prob and update functions.
"""

from __future__ import annotations

import logging
import os

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics, galleries and eval results go.")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() (TPU pods, multi-process CPU).")

log = logging.getLogger("vrrl_jax.train")


def _initialize_distributed() -> None:
  import jax

  if os.environ.get("VRRL_COORDINATOR"):  # explicit (launch/cpu_multiprocess.sh)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
      os.environ["VRRL_COORDINATOR"], int(os.environ["VRRL_NUM_PROCESSES"]), int(os.environ["VRRL_PROCESS_ID"])
    )
  else:  # TPU VMs: everything from the environment
    jax.distributed.initialize()


def main(argv) -> None:
  del argv
  from vrrl_jax import experiment, run_config, trainer

  experiment.setup_console()
  if FLAGS.multihost:
    _initialize_distributed()
  if FLAGS.config is None or FLAGS.workdir is None:
    raise app.UsageError("--config and --workdir are required")
  experiment.enable_compilation_cache()
  try:
    trainer.run(FLAGS.config, FLAGS.workdir)
  except run_config.ConfigError as e:  # the message names the field; a traceback would only bury it
    raise SystemExit(f"bad config: {e}") from None


if __name__ == "__main__":
  app.run(main)
