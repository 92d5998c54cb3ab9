"""vrrl_jax.data.tokenizer: the tiny Qwen2-style tokenizer, checked against transformers / tokenizers directly."""

import numpy as np
import pytest

from vrrl_jax.data import tokenizer as tokenizer_lib

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
from transformers.models.qwen2 import tokenization_qwen2  # noqa: E402


def _corpus(seed=0, n_words=300, n_lines=400):
  rng = np.random.default_rng(seed)
  words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 9))) for _ in range(n_words)]
  return [" ".join(rng.choice(words, 12)) + "." for _ in range(n_lines)]


CORPUS = _corpus()
SAMPLES = [
  "<|im_start|>user\n<|vision_start|><|image_pad|><|image_pad|><|vision_end|>Describe it.<|im_end|>\n",
  "Plain text with digits 12345, punctuation!? and   spaces\n\n\tand newlines.",
  "Unicode: café, naïve, 東京, emoji 🙂 and NFC: e\u0301",
  "don't they'll I'm WE'RE",
  CORPUS[0] + " " + CORPUS[1],
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A 512-token tokenizer trained on CORPUS, saved and reloaded with AutoTokenizer."""
  path = tmp_path_factory.mktemp("tok512")
  built = tokenizer_lib.build_tokenizer(CORPUS, vocab_size=512)
  built.save_pretrained(path)
  return built, transformers.AutoTokenizer.from_pretrained(path)


def test_pretokenize_regex_is_transformers_qwen2():
  assert tokenizer_lib.QWEN_PRETOKENIZE_REGEX == tokenization_qwen2.PRETOKENIZE_REGEX


def test_bytes_to_unicode_matches_transformers():
  from transformers.convert_slow_tokenizer import bytes_to_unicode

  assert tokenizer_lib.bytes_to_unicode() == bytes_to_unicode()


def test_byte_level_tokenizer_round_trips(tmp_path):
  tok = tokenizer_lib.build_tokenizer()
  assert len(tok) == tokenizer_lib.MIN_VOCAB_SIZE == 270
  tok.save_pretrained(tmp_path)
  loaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
  assert type(loaded).__name__ == "Qwen2Tokenizer" and len(loaded) == 270
  for text in SAMPLES:
    ids = loaded(text, add_special_tokens=False)["input_ids"]
    assert ids == tok(text, add_special_tokens=False)["input_ids"]
    assert loaded.decode(ids) == tokenizers.normalizers.NFC().normalize_str(text)
  # Without merges every ordinary token is one byte, in GPT-2's byte order.
  utf8 = "é".encode()
  byte_order = list(tokenizer_lib.bytes_to_unicode())
  assert loaded("é", add_special_tokens=False)["input_ids"] == [byte_order.index(b) for b in utf8]


def test_special_tokens_follow_qwen_layout(trained):
  """Same relative ids as the real vocabulary (QWEN_VL_NOTES §4.1: 151643 <|endoftext|> .. 151656 <|video_pad|>)."""
  _, tok = trained
  ids = tokenizer_lib.special_token_ids(tok)
  real = dict(
    pad_token_id=151643,
    im_start_id=151644,
    im_end_id=151645,
    vision_start_token_id=151652,
    vision_end_token_id=151653,
    image_token_id=151655,
    video_token_id=151656,
  )
  for name, real_id in real.items():
    assert getattr(ids, name) - ids.pad_token_id == real_id - 151643, name
  assert ids.vocab_size == len(tok) == ids.video_token_id + 1
  assert tok.eos_token == "<|im_end|>" and tok.pad_token_id == ids.pad_token_id
  assert tok.bos_token is None and tok.unk_token is None


def test_special_tokens_are_atomic(trained):
  _, tok = trained
  for token in tokenizer_lib.QWEN_SPECIAL_TOKENS:
    ids = tok(f"a{token}b", add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids(token) in ids and len(ids) == 3, token


def test_trained_vocab_size_and_saved_round_trip(trained):
  built, tok = trained
  assert len(tok) == len(built) == 512
  assert tok.get_vocab() == built.get_vocab()
  for text in SAMPLES:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == built(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == tokenizers.normalizers.NFC().normalize_str(text)


def test_segmentation_equals_tokenizers_trainer(trained):
  """Our vocabulary re-numbers the BpeTrainer's tokens; the pieces a text splits into must be the trainer's."""
  from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

  _, tok = trained
  reference = Tokenizer(models.BPE())
  reference.normalizer = normalizers.NFC()
  reference.pre_tokenizer = pre_tokenizers.Sequence(
    [
      pre_tokenizers.Split(Regex(tokenization_qwen2.PRETOKENIZE_REGEX), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ]
  )
  trainer = trainers.BpeTrainer(
    vocab_size=512 - len(tokenizer_lib.QWEN_SPECIAL_TOKENS),
    min_frequency=2,
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  reference.train_from_iterator(CORPUS, trainer=trainer)
  for text in SAMPLES[1:]:
    assert tok.tokenize(text) == reference.encode(text).tokens, text


def test_merges_shorten_corpus_text(trained):
  _, tok = trained
  byte_level = tokenizer_lib.build_tokenizer()
  text = " ".join(CORPUS[:20])
  n_trained = len(tok(text, add_special_tokens=False)["input_ids"])
  n_bytes = len(byte_level(text, add_special_tokens=False)["input_ids"])
  assert n_bytes == len(text.encode()) and n_trained < 0.7 * n_bytes


def test_training_is_deterministic():
  a = tokenizer_lib.build_tokenizer(CORPUS[:100], vocab_size=400)
  b = tokenizer_lib.build_tokenizer(CORPUS[:100], vocab_size=400)
  assert a.get_vocab() == b.get_vocab()


def test_small_corpus_gives_smaller_vocab():
  tok = tokenizer_lib.build_tokenizer(["go left go right"] * 5, vocab_size=1024)
  assert tokenizer_lib.MIN_VOCAB_SIZE < len(tok) < 1024
  assert tokenizer_lib.special_token_ids(tok).vocab_size == len(tok)


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="vocab_size must be >= 270"):
    tokenizer_lib.build_tokenizer(CORPUS, vocab_size=100)
  with pytest.raises(ValueError, match="needs merges learned from a corpus"):
    tokenizer_lib.build_tokenizer(None, vocab_size=300)
  with pytest.raises(TypeError, match="corpus must yield str"):
    tokenizer_lib.build_tokenizer([b"bytes"], vocab_size=300)


def test_special_token_ids_rejects_tokenizer_without_qwen_specials():
  from transformers import Qwen2Tokenizer

  vocab = {ch: i for i, ch in enumerate(tokenizer_lib.bytes_to_unicode().values())}
  vocab["<|endoftext|>"] = len(vocab)
  plain = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None)  # knows only <|endoftext|>
  with pytest.raises(ValueError, match="<\\|im_start\\|> is not a single token"):
    tokenizer_lib.special_token_ids(plain)


def test_cli_writes_loadable_tokenizer(tmp_path, capsys):
  corpus_file = tmp_path / "corpus.txt"
  corpus_file.write_text("\n".join(CORPUS[:100]), encoding="utf-8")
  out = tmp_path / "tok"
  tokenizer_lib.main(["--out", str(out), "--corpus", str(corpus_file), "--vocab-size", "320"])
  tok = transformers.AutoTokenizer.from_pretrained(out)
  assert len(tok) == 320 and "image_token_id" in capsys.readouterr().out
  assert tok.chat_template == tokenizer_lib.qwen2_5_vl_chat_template()
