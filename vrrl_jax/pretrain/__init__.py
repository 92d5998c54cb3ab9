"""Perception pretraining: the project's own tiny VLM learns to see FrozenLake maps and feedback images before
reflection SFT and VRRL (``python -m vrrl_jax.pretrain --config configs/pretrain_tiny.py --workdir W``)."""
