"""Where a training run is (its phase and global step, the RL data position), and restoring it from a checkpoint.

Shared by the run loop and by evaluation of a training checkpoint, so neither imports the other.
"""

from __future__ import annotations

import dataclasses

from vrrl_jax import run_config
from vrrl_jax.checkpoints.train_checkpoint import TrainCheckpointer
from vrrl_jax.rl import train_state as ts_lib

SFT, SFT_DONE, RL, DONE = "sft", "sft_done", "rl", "done"


@dataclasses.dataclass
class Progress:
  """The host part of a checkpoint: where the run is."""

  phase: str = SFT
  global_step: int = 0  # last completed step (SFT and RL counted together)
  prompts_consumed: int = 0  # RL data position (online filtering draws a variable number per step)

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def resume(ckpt: TrainCheckpointer, exp, config, params, specs, buffer, step: int | None = None):
  """(progress, state) of the newest readable checkpoint (or of ``step``), or None; ``buffer`` is loaded from it. The restore target
  depends on the phase the checkpoint records: an SFT state (no reference model, SFT optimizer) or an RL state."""

  def abstract_for(host: dict):
    rl = host.get("phase") == RL
    keep_reference = rl and float(config.rl.loss.kl_coef) > 0
    if rl:
      opt_cfg = run_config.optimizer_config(config, float(config.rl.learning_rate))
    else:
      opt_cfg = run_config.sft_optimizer_config(config)
    optimizer = ts_lib.make_optimizer(opt_cfg)
    return ts_lib.abstract_train_state(
      params, specs, optimizer, exp.mesh, exp.rules, keep_reference, run_config.reference_memory(config)
    )

  restored = ckpt.restore_latest(abstract_for, step=step)
  if restored is None:
    return None
  _, state, buffer_state, host = restored
  buffer.load_state_dict(buffer_state)
  return Progress(**host), state
