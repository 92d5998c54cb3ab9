"""Rule-based rewards for the VRRL tasks."""

from vrrl_jax.rewards.frozenlake import (  # noqa: F401
  METRIC_KEYS,
  BufferFields,
  RewardConfig,
  format_score,
  goal_distances,
  progress_rate,
  reflection_raw_sum,
  score_batch,
  score_turns,
)
