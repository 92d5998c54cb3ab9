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


def export_hf(exp, params, out: str | os.PathLike) -> list[str]:
    """Writes ``params`` of ``exp``'s model under ``out`` (float32); returns the files written."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = exp.model_config
    state_dict = hf.state_dict_from_params(jax.tree.map(np.asarray, jax.device_get(params)), config, layout="disk")
    written = safetensors_io.write_checkpoint(out, state_dict, safetensors_io.hf_config_dict(config), "float32",
                                              "5GB")
    written += [pathlib.Path(f).name for f in exp.tokenizer.save_pretrained(str(out))]
    (out / "preprocessor_config.json").write_text(json.dumps(exp.processor.image_config.to_hf_dict(), indent=2) + "\n")
    return sorted(set(written + ["preprocessor_config.json"]))
