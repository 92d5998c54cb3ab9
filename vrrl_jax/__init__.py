"""vrrl_jax: VRRL (visually grounded self-reflection via RL) for vision-language models in JAX/Flax."""

__version__ = "0.1.0"
