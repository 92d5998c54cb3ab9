"""The small tokenizer of the tiny CPU model, stored in the package.

Trained offline (byte-level BPE with Qwen's pre-tokenizer and special tokens, ``tokenizer.build_tokenizer``) on
every task's own text: the chat template's fixed strings, the FrozenLake task prompt, the feedback text and
synthetic reflection transcripts, and perception pretraining's answers (``vrrl_jax.pretrain.tasks``). On top of
the learned merges, the fixed texts conversations repeat (the task prompt, about 160 BPE tokens, the feedback
text, about 64, and pretraining's questions) are whole added tokens, so a three-turn episode is under 200 tokens
instead of about 500: that is what makes a CPU run fit in minutes. The texts themselves are unchanged
(``protocol.TASK_PROMPT``/``FEEDBACK_TEXT``, ``tasks.QUESTIONS``). Real runs use the Qwen tokenizer of the
checkpoint.

Rebuild (deterministic): ``python -m vrrl_jax.pretrain.tokenizer --out vrrl_jax/assets/tokenizer_frozenlake``.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

from vrrl_jax.data.task_tokenizer import ASSET_DIR

VOCAB_SIZE = 1024


def task_corpus(n_maps: int = 400, seed: int = 0) -> list[str]:
  """Documents covering every string a FrozenLake conversation contains."""
  from vrrl_jax.tasks.frozenlake import generate, protocol
  from vrrl_jax.pretrain import tasks as pretrain_tasks
  from vrrl_jax.tasks.frozenlake import transcripts

  docs = [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
    "<|im_start|>user\n",
    "<|im_start|>assistant\n",
    "<|im_end|>\n",
  ]
  # The fixed texts appear in every conversation; weight them like a corpus of conversations would.
  docs += [protocol.TASK_PROMPT, protocol.FEEDBACK_TEXT, protocol.FIRST_USER_TEXT] * 50
  rng = np.random.default_rng(seed)
  for level in (3, 4, 5, 6, 7):
    for spec in generate.generate_maps(level, n_maps // 5, seed + level):
      docs.extend(transcripts.make_transcript(spec, rng).turns)
      # Perception pretraining's answers (the map cell by cell, locations, what a drawn route does).
      docs.extend(pretrain_tasks.make_example(task, spec, rng, "compact").answer for task in pretrain_tasks.TASKS)
  return docs


def main(argv: list[str] | None = None) -> None:
  from vrrl_jax.data import tokenizer as tokenizer_lib

  parser = argparse.ArgumentParser(description="build the packaged FrozenLake tokenizer")
  parser.add_argument("--out", type=pathlib.Path, default=ASSET_DIR)
  parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
  args = parser.parse_args(argv)
  from tokenizers import AddedToken

  from vrrl_jax.tasks.frozenlake import protocol
  from vrrl_jax.pretrain import tasks as pretrain_tasks

  tok = tokenizer_lib.build_tokenizer(task_corpus(), vocab_size=args.vocab_size)
  tok.add_tokens(
    [
      AddedToken(text, special=False, normalized=False, single_word=False, lstrip=False, rstrip=False)
      for text in (protocol.TASK_PROMPT, protocol.FEEDBACK_TEXT, *pretrain_tasks.QUESTIONS.values())
    ]
  )
  tok.save_pretrained(str(args.out))
  print(f"saved a {len(tok)}-token tokenizer to {args.out}")


if __name__ == "__main__":
  main()
