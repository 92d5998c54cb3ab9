"""A pretrained model as a self-contained Hugging Face directory: config.json, model.safetensors, the tokenizer with
its chat template, and preprocessor_config.json, so transformers and ``vrrl_jax.models.from_pretrained`` both
load it, and a run takes it through ``init_checkpoint`` like any Qwen checkpoint."""

from __future__ import annotations

import json
import os
import pathlib

import jax
import numpy as np

from vrrl_jax.checkpoints import hf, safetensors_io


def with_text_token_ids(hf_config: dict, tokenizer) -> dict:
  """``bos_token_id`` (<|endoftext|>) and ``eos_token_id`` (<|im_end|>) of *this* tokenizer, top level and in
  ``text_config``, as Qwen's config.json carries them; left out, transformers fills in Qwen's ids (151643, 151645),
  outside a small vocabulary, and warns."""
  ids = {
    "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
  }
  out = {**hf_config, **ids}
  if isinstance(hf_config.get("text_config"), dict):
    out["text_config"] = {**hf_config["text_config"], **ids}
  return out


def export_hf(exp, params, out: str | os.PathLike) -> list[str]:
  """Writes ``params`` of ``exp``'s model under ``out`` (float32); returns the files written."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  config = exp.model_config
  state_dict = hf.state_dict_from_params(jax.tree.map(np.asarray, jax.device_get(params)), config, layout="disk")
  hf_config = with_text_token_ids(safetensors_io.hf_config_dict(config), exp.tokenizer)
  written = safetensors_io.write_checkpoint(out, state_dict, hf_config, "float32", "5GB")
  written += [pathlib.Path(f).name for f in exp.tokenizer.save_pretrained(str(out))]
  (out / "preprocessor_config.json").write_text(json.dumps(exp.processor.image_config.to_hf_dict(), indent=2) + "\n")
  return sorted(set(written + ["preprocessor_config.json"]))


def write_model_card(out: str | os.PathLike, config, heldout: dict[str, float], wall_seconds: float) -> pathlib.Path:
  """``MODEL_CARD.md`` beside the weights: how the model was made (the command's config, seed, steps, wall time)
  and its held-out accuracy per task and unit."""
  rows = "\n".join(f"| {name.removeprefix('heldout/')} | {value:.4f} |" for name, value in sorted(heldout.items()))
  text = f"""# Tiny VLM, perception-pretrained by vrrl_jax

Made by `python -m vrrl_jax.pretrain` (its full config is `pretrain_config.json` beside this file):
seed {config.seed}, {config.pretrain.steps} steps of {config.pretrain.batch_size} examples, lr
{config.pretrain.learning_rate}, tasks {dict(config.pretrain.task_weights)}, levels {tuple(config.pretrain.levels)},
style {config.pretrain.style!r}; wall time {wall_seconds / 60:.1f} min.

Held-out accuracy (the VRRL release's evaluation maps L3-L6, teacher forced; a unit is right when every answer
token overlapping it is, "exact" when every answer token is):

| task/unit | accuracy |
| --- | --- |
{rows}
"""
  path = pathlib.Path(out) / "MODEL_CARD.md"
  path.write_text(text, encoding="utf-8")
  (pathlib.Path(out) / "pretrain_config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
  return path
