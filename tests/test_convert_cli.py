"""`python -m vrrl_jax.convert` end to end in subprocesses: HF -> orbax -> sharded HF, against the original files."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import qwen_tiny as qt
from vrrl_jax.checkpoints import safetensors_io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args):
  return subprocess.run(
    [sys.executable, "-m", "vrrl_jax.convert", *args], cwd=REPO, capture_output=True, text=True, timeout=300
  )


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_cli_round_trip(tmp_path, family):
  hf_dir, ckpt, export = tmp_path / "hf", tmp_path / "ckpt", tmp_path / "export"
  if family == "qwen2_5_vl":
    qt.build_hf_model(tie_word_embeddings=False, seed=7).save_pretrained(hf_dir)
  else:
    from test_models_qwen3_vl import build_hf

    build_hf(tie=False, seed=7).save_pretrained(hf_dir)
  (hf_dir / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}))

  result = run_cli("hf-to-orbax", "--hf-dir", str(hf_dir), "--out", str(ckpt))
  assert result.returncode == 0, result.stderr
  result = run_cli("orbax-to-hf", "--ckpt", str(ckpt), "--out", str(export), "--max-shard-size", "300KB")
  assert result.returncode == 0, result.stderr

  files = sorted(os.listdir(export))
  assert "model.safetensors.index.json" in files and len([f for f in files if f.startswith("model-0")]) >= 3
  assert (export / "tokenizer_config.json").read_text() == (hf_dir / "tokenizer_config.json").read_text()
  assert (export / "generation_config.json").read_text() == (hf_dir / "generation_config.json").read_text()
  original = safetensors_io.read_state_dict(hf_dir)
  exported = safetensors_io.read_state_dict(export)
  assert exported.keys() == original.keys()
  for key, value in original.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)

  result = run_cli("orbax-to-hf", "--ckpt", str(hf_dir), "--out", str(tmp_path / "wrong"))
  assert result.returncode == 1
  assert "no vrrl_config.json; not a vrrl_jax checkpoint" in result.stderr


def test_train_to_orbax_exports_the_trained_policy(tmp_path, compilation_cache):
  """Two SFT steps (the first has warmup lr 0) from the shipped tiny VLM (vision tower frozen), exported and then converted to Hugging Face: the
  text weights are the trained ones (they moved), the frozen vision weights are the shipped ones, and the directory
  carries the shipped tokenizer, which transformers loads."""
  from transformers import AutoTokenizer

  from vrrl_jax.pretrain import TINY_VLM_DIR

  workdir, ckpt, export = tmp_path / "run", tmp_path / "ckpt", tmp_path / "hf"
  overrides = ["--config.sft.steps=2", "--config.sft.batch_size=2", "--config.rl.steps=0", "--config.eval.levels=()"]
  config = os.path.join(REPO, "configs", "frozenlake_tiny_cpu.py")
  train = subprocess.run(
    [sys.executable, "-m", "vrrl_jax.train", f"--config={config}", f"--workdir={workdir}", *overrides],
    cwd=REPO,
    env={
      **os.environ,
      "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
      "JAX_PLATFORMS": "cpu",
      "VRRL_JAX_CACHE": str(compilation_cache),  # the session's, not the user's ~/.cache: same cost everywhere
    },
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert train.returncode == 0, train.stderr[-3000:]
  result = run_cli(
    "train-to-orbax", "--config", config, "--checkpoint", str(workdir / "checkpoints"), "--out", str(ckpt), *overrides
  )
  assert result.returncode == 0, result.stderr
  result = run_cli("orbax-to-hf", "--ckpt", str(ckpt), "--out", str(export))
  assert result.returncode == 0, result.stderr

  shipped, exported = safetensors_io.read_state_dict(TINY_VLM_DIR), safetensors_io.read_state_dict(export)
  assert exported.keys() == shipped.keys()
  vision = [k for k in shipped if k.startswith("visual.")]
  text = [k for k in shipped if k.startswith("model.layers.")]
  assert vision and text
  for key in vision:
    np.testing.assert_array_equal(exported[key], shipped[key], err_msg=key)
  assert sum(not np.array_equal(exported[k], shipped[k]) for k in text) >= len(text) // 2
  assert AutoTokenizer.from_pretrained(export).get_vocab() == AutoTokenizer.from_pretrained(TINY_VLM_DIR).get_vocab()

  result = run_cli(
    "train-to-orbax", "--config", config, "--checkpoint", str(workdir / "checkpoints"), "--out", str(tmp_path / "x"),
    "--config.init_checkpoint=",
  )  # fmt: skip
  assert result.returncode == 1 and "trains from scratch" in result.stderr
