"""Perception pretraining: the project's own tiny VLM learns to see FrozenLake maps and feedback images before
reflection SFT and VRRL (``python -m vrrl_jax.pretrain --config configs/pretrain_tiny.py --workdir W``)."""

import pathlib

# The tiny VLM this stage made, shipped in the package (a Hugging Face directory with its MODEL_CARD.md): the main
# job's init_checkpoint.
TINY_VLM_DIR = pathlib.Path(__file__).resolve().parents[1] / "assets" / "tiny_vlm"
