"""Batched multi-turn sampling with a KV cache (sampler.py) and FrozenLake episode rollouts (rollout.py)."""
