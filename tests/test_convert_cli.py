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
