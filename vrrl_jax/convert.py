"""Converts Qwen2.5-VL checkpoints between Hugging Face safetensors and our orbax format.

  python -m vrrl_jax.convert hf-to-orbax --hf-dir D --out O [--dtype bfloat16] [--scan-layers]
  python -m vrrl_jax.convert orbax-to-hf --ckpt O --out D2 [--dtype bfloat16] [--max-shard-size 5GB]
  python -m vrrl_jax.convert train-to-orbax --config C --checkpoint W/checkpoints [--step N] --out O \
      [--config.key=value ...]

``train-to-orbax`` takes a trained policy out of a training run: the params of a training checkpoint (the newest
step, or ``--step``) as a model directory that ``init_checkpoint``, ``vrrl_jax.eval`` and ``orbax-to-hf`` read. It
keeps the config.json and companion files of the run's ``init_checkpoint``, the model the run started from; give the
run's config with the overrides it was trained with.

Tokenizer, processor and generation files travel along both ways, so an exported directory is complete for
transformers and vLLM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Sequence

import jax
import numpy as np

from vrrl_jax.checkpoints import hf
from vrrl_jax.checkpoints import orbax_io
from vrrl_jax.checkpoints import pretrained
from vrrl_jax.checkpoints import safetensors_io

# Files besides config.json and the weights that make a Hugging Face directory usable on its own.
COMPANION_FILES = (
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "vocab.json",
  "merges.txt",
  "chat_template.json",
  "chat_template.jinja",
  "preprocessor_config.json",
  "video_preprocessor_config.json",
  "processor_config.json",
  "generation_config.json",
)


def copy_companion_files(source: str, destination: str) -> list[str]:
  """Copies the COMPANION_FILES that exist in `source`; returns their names."""
  copied = []
  for name in COMPANION_FILES:
    if os.path.isfile(os.path.join(source, name)):
      shutil.copyfile(os.path.join(source, name), os.path.join(destination, name))
      copied.append(name)
  return copied


def hf_to_orbax(hf_dir: str, out: str, dtype: str | None = None, scan_layers: bool = False) -> None:
  """Hugging Face directory -> our checkpoint (params in `dtype`, default the checkpoint's own)."""
  if pretrained.checkpoint_kind(hf_dir) != pretrained.HF:
    raise safetensors_io.CheckpointError(f"{hf_dir} is not a Hugging Face checkpoint directory")
  hf_config = safetensors_io.read_config(hf_dir)
  model, params = pretrained.from_pretrained(hf_dir, dtype=dtype, scan_layers=scan_layers)
  orbax_io.save(out, params, model.config, hf_config=hf_config)
  copy_companion_files(hf_dir, out)


def orbax_to_hf(ckpt: str, out: str, dtype: str | None = None, max_shard_size: int | str = "5GB") -> list[str]:
  """Our checkpoint -> Hugging Face directory (on-disk key layout; `dtype` default: the saved param dtype).
  Returns the files written."""
  record = orbax_io.read_record(ckpt)
  config = orbax_io.saved_config(ckpt)
  dtype = config.param_dtype if dtype is None else pretrained.dtype_name(dtype)
  params = jax.device_get(orbax_io.restore(ckpt, config))
  state_dict = hf.state_dict_from_params(jax.tree.map(np.asarray, params), config, layout="disk")
  written = safetensors_io.write_checkpoint(out, state_dict, record["hf_config"], dtype, max_shard_size)
  return written + copy_companion_files(ckpt, out)


def train_to_orbax(
  config_path: str, checkpoint: str, out: str, step: int | None = None, overrides: Sequence[str] = ()
) -> None:
  """A training checkpoint's policy params -> our checkpoint, with the companion files of the model it started from."""
  from vrrl_jax import eval as eval_lib  # the training stack, only for this command
  from vrrl_jax import experiment

  config = experiment.load_config(config_path, overrides)
  start = str(config.get("init_checkpoint") or "")
  if not start:
    raise ValueError(
      f"{config_path} trains from scratch (no init_checkpoint): there is no tokenizer or config.json to export with it"
    )
  kind = pretrained.checkpoint_kind(start)
  hf_config = safetensors_io.read_config(start) if kind == pretrained.HF else orbax_io.read_record(start)["hf_config"]
  params = eval_lib.load_params(config, checkpoint, step)
  orbax_io.save(out, params, experiment.build(config).model_config, hf_config=hf_config)
  copy_companion_files(start, out)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m vrrl_jax.convert", description=__doc__.split("\n\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  to_orbax = commands.add_parser("hf-to-orbax", help="Hugging Face safetensors directory -> orbax checkpoint")
  to_orbax.add_argument("--hf-dir", required=True, help="directory with config.json and *.safetensors")
  to_orbax.add_argument("--out", required=True, help="new directory for the orbax checkpoint")
  to_orbax.add_argument(
    "--dtype", choices=sorted(safetensors_io.NUMPY_DTYPES), help="params dtype (default: config.json's dtype)"
  )
  to_orbax.add_argument("--scan-layers", action="store_true", help="store layers stacked (for scan_layers=True)")
  to_hf = commands.add_parser("orbax-to-hf", help="orbax checkpoint -> Hugging Face safetensors directory")
  to_hf.add_argument("--ckpt", required=True, help="orbax checkpoint directory written by hf-to-orbax or training")
  to_hf.add_argument("--out", required=True, help="new directory for the Hugging Face checkpoint")
  to_hf.add_argument(
    "--dtype", choices=sorted(safetensors_io.NUMPY_DTYPES), help="tensor dtype (default: the saved params dtype)"
  )
  to_hf.add_argument("--max-shard-size", default="5GB", help="largest safetensors file, e.g. 5GB or 500MB")
  from_train = commands.add_parser("train-to-orbax", help="a training checkpoint's policy -> orbax checkpoint")
  from_train.add_argument("--config", required=True, help="the run's config file (its init_checkpoint and model)")
  from_train.add_argument("--checkpoint", required=True, help="the run's checkpoint directory (workdir/checkpoints)")
  from_train.add_argument("--step", type=int, default=None, help="a saved step (default: the newest)")
  from_train.add_argument("--out", required=True, help="new directory for the orbax checkpoint")
  args, overrides = parser.parse_known_args(argv)
  if overrides and args.command != "train-to-orbax":
    parser.error(f"unrecognized arguments: {' '.join(overrides)}")
  try:
    if args.command == "hf-to-orbax":
      hf_to_orbax(args.hf_dir, args.out, args.dtype, args.scan_layers)
      print(args.out)
    elif args.command == "train-to-orbax":
      train_to_orbax(args.config, args.checkpoint, args.out, args.step, overrides)
      print(args.out)
    else:
      for name in orbax_to_hf(args.ckpt, args.out, args.dtype, args.max_shard_size):
        print(os.path.join(args.out, name))
  except (ValueError, OSError) as e:  # CheckpointError is a ValueError
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
