"""The small tokenizer of the tiny CPU model, stored in the package (``vrrl_jax/assets/tokenizer_frozenlake``).

Built from the tasks' own text by the pretraining stage (``vrrl_jax.pretrain.tokenizer``, which says how and why);
this module only finds and loads it. Real runs use the Qwen tokenizer of the checkpoint.
"""

from __future__ import annotations

import pathlib

ASSET_DIR = pathlib.Path(__file__).resolve().parents[1] / "assets" / "tokenizer_frozenlake"


def load_task_tokenizer(path: str | pathlib.Path = ASSET_DIR):
  from transformers import AutoTokenizer

  path = pathlib.Path(path)
  if not (path / "tokenizer_config.json").is_file():
    raise FileNotFoundError(f"no tokenizer at {path}; rebuild it with python -m vrrl_jax.pretrain.tokenizer")
  return AutoTokenizer.from_pretrained(str(path))
