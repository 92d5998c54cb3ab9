"""Tiny offline Qwen2-style tokenizer, and the special-token ids models must agree on.

The real Qwen vocabulary has 151k entries; a tiny test model wants a few hundred. This builds a byte-level BPE
tokenizer with Qwen's pre-tokenizer, normaliser, decoder and special tokens (same strings, same relative order,
placed after the ordinary tokens as in the real vocabulary), optionally learning merges from a text corpus so
prompts stay short. The result is a `transformers.Qwen2Tokenizer` that round-trips through `save_pretrained` and
`AutoTokenizer.from_pretrained`.

CLI: python -m vrrl_jax.data.tokenizer --out DIR [--corpus FILE ...] [--vocab-size 768]
"""

import argparse
import dataclasses
import json
import pathlib
from collections.abc import Iterable


# Qwen2/2.5/3 special tokens in their real id order (151643 .. 151656).
QWEN_SPECIAL_TOKENS = (
  "<|endoftext|>",
  "<|im_start|>",
  "<|im_end|>",
  "<|object_ref_start|>",
  "<|object_ref_end|>",
  "<|box_start|>",
  "<|box_end|>",
  "<|quad_start|>",
  "<|quad_end|>",
  "<|vision_start|>",
  "<|vision_end|>",
  "<|vision_pad|>",
  "<|image_pad|>",
  "<|video_pad|>",
)

# `PRETOKENIZE_REGEX` of transformers/models/qwen2/tokenization_qwen2.py.
QWEN_PRETOKENIZE_REGEX = (
  r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
  r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

CHAT_TEMPLATE_PATH = pathlib.Path(__file__).resolve().parents[1] / "assets" / "qwen2_5_vl_chat_template.jinja"

NUM_BYTE_TOKENS = 256
MIN_VOCAB_SIZE = NUM_BYTE_TOKENS + len(QWEN_SPECIAL_TOKENS)


def qwen2_5_vl_chat_template() -> str:
  """The Qwen2.5-VL hub chat template (QWEN_VL_NOTES §4.2), kept verbatim in vrrl_jax/assets."""
  return CHAT_TEMPLATE_PATH.read_text(encoding="utf-8")


def bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte -> printable character table that byte-level BPE vocabularies are written in."""
  printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
  printable += list(range(ord("®"), ord("ÿ") + 1))
  table = {b: chr(b) for b in printable}
  shift = 0
  for b in range(256):
    if b not in table:
      table[b] = chr(256 + shift)
      shift += 1
  return dict(sorted(table.items()))


def _qwen_pre_tokenizer():
  from tokenizers import Regex, pre_tokenizers

  return pre_tokenizers.Sequence(
    [
      pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ]
  )


def train_merges(corpus: Iterable[str], num_merges: int, min_frequency: int = 2) -> list[tuple[str, str]]:
  """Learns up to `num_merges` BPE merges over Qwen's pre-tokenisation of `corpus` (fewer if the corpus runs out)."""
  from tokenizers import Tokenizer, models, normalizers, trainers

  if num_merges < 0:
    raise ValueError(f"num_merges must be >= 0, got {num_merges}")
  if num_merges == 0:
    return []
  alphabet = list(bytes_to_unicode().values())
  tk = Tokenizer(models.BPE())
  tk.normalizer = normalizers.NFC()
  tk.pre_tokenizer = _qwen_pre_tokenizer()
  trainer = trainers.BpeTrainer(
    vocab_size=NUM_BYTE_TOKENS + num_merges,
    min_frequency=min_frequency,
    initial_alphabet=alphabet,
    special_tokens=[],
    show_progress=False,
  )
  texts = list(corpus)
  for t in texts:
    if not isinstance(t, str):
      raise TypeError(f"corpus must yield str, got {type(t).__name__}")
  tk.train_from_iterator(texts, trainer=trainer)
  merges = json.loads(tk.to_str())["model"]["merges"]
  pairs = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]
  if len(pairs) > num_merges:
    raise RuntimeError(f"trainer produced {len(pairs)} merges, more than the {num_merges} asked for")
  return pairs


def build_tokenizer(
  corpus: Iterable[str] | None = None,
  vocab_size: int = MIN_VOCAB_SIZE,
  min_frequency: int = 2,
  chat_template: str | None = None,
):
  """A Qwen2Tokenizer: 256 byte tokens (ids 0..255), learned merges, then Qwen's special tokens.

  `vocab_size` counts every id including the specials; with a corpus too small to support that many merges the
  vocabulary is smaller, so size model embeddings with `len(tokenizer)`. Without a corpus, `vocab_size` must be
  exactly MIN_VOCAB_SIZE (bytes + specials).
  """
  from tokenizers import AddedToken
  from transformers import Qwen2Tokenizer

  if vocab_size < MIN_VOCAB_SIZE:
    raise ValueError(
      f"vocab_size must be >= {MIN_VOCAB_SIZE} (256 bytes + {len(QWEN_SPECIAL_TOKENS)} specials), got {vocab_size}"
    )
  num_merges = vocab_size - MIN_VOCAB_SIZE
  if corpus is None and num_merges:
    raise ValueError(
      f"vocab_size {vocab_size} needs merges learned from a corpus; pass corpus= or use vocab_size={MIN_VOCAB_SIZE}"
    )
  merges = train_merges(corpus, num_merges, min_frequency) if corpus is not None else []

  vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
  for left, right in merges:
    if left not in vocab or right not in vocab:
      raise RuntimeError(f"merge ({left!r}, {right!r}) uses a token that no earlier merge produced")
    vocab.setdefault(left + right, len(vocab))
  for token in QWEN_SPECIAL_TOKENS:
    vocab[token] = len(vocab)

  tok = Qwen2Tokenizer(
    vocab=vocab,
    merges=[tuple(m) for m in merges],
    unk_token=None,
    bos_token=None,
    eos_token="<|im_end|>",
    pad_token="<|endoftext|>",
    clean_up_tokenization_spaces=False,
    errors="replace",
  )
  # Without this the specials other than eos/pad are split into bytes (QWEN_VL_NOTES §4.3).
  tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS], special_tokens=True)
  tok.chat_template = chat_template if chat_template is not None else qwen2_5_vl_chat_template()
  for token in QWEN_SPECIAL_TOKENS:
    if tok.convert_tokens_to_ids(token) != vocab[token]:
      raise RuntimeError(f"special token {token} did not keep id {vocab[token]}")
  return tok


@dataclasses.dataclass(frozen=True)
class SpecialTokenIds:
  """The ids a model config (image_token_id, vision_start_token_id, ...) and the sampler (eos, pad) need."""

  pad_token_id: int  # <|endoftext|>
  im_start_id: int
  im_end_id: int  # eos of chat turns
  vision_start_token_id: int
  vision_end_token_id: int
  image_token_id: int
  video_token_id: int
  vocab_size: int  # len(tokenizer): rows an embedding table needs


def special_token_ids(tokenizer) -> SpecialTokenIds:
  """Looks the ids up in `tokenizer` (a tiny one or a real Qwen one); raises if one is not a single token."""

  def lookup(token: str) -> int:
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
      raise ValueError(f"{token} is not a single token in this tokenizer (encodes to {ids})")
    if tokenizer.convert_ids_to_tokens(ids[0]) != token:
      raise ValueError(f"{token} encodes to id {ids[0]} which decodes to {tokenizer.convert_ids_to_tokens(ids[0])!r}")
    return int(ids[0])

  pad = lookup("<|endoftext|>")
  if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != pad:
    raise ValueError(f"tokenizer pad_token_id {tokenizer.pad_token_id} is not <|endoftext|> ({pad})")
  return SpecialTokenIds(
    pad_token_id=pad,
    im_start_id=lookup("<|im_start|>"),
    im_end_id=lookup("<|im_end|>"),
    vision_start_token_id=lookup("<|vision_start|>"),
    vision_end_token_id=lookup("<|vision_end|>"),
    image_token_id=lookup("<|image_pad|>"),
    video_token_id=lookup("<|video_pad|>"),
    vocab_size=len(tokenizer),
  )


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, type=pathlib.Path, help="directory for save_pretrained")
  parser.add_argument("--corpus", nargs="*", default=[], type=pathlib.Path, help="text files, one document a line")
  parser.add_argument("--vocab-size", type=int, default=MIN_VOCAB_SIZE)
  parser.add_argument("--min-frequency", type=int, default=2)
  args = parser.parse_args(argv)
  corpus = None
  if args.corpus:
    corpus = [line for path in args.corpus for line in path.read_text(encoding="utf-8").splitlines()]
  tok = build_tokenizer(corpus, vocab_size=args.vocab_size, min_frequency=args.min_frequency)
  tok.save_pretrained(args.out)
  print(f"saved {len(tok)}-token tokenizer to {args.out}: {special_token_ids(tok)}")


if __name__ == "__main__":
  main()
