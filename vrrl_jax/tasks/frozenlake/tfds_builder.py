"""The tensorflow-datasets builder for FrozenLake (see ``data.py`` for why it is optional).

Every feature is a ``tfds.features.Tensor`` and files are array_record, so building and reading need
no TensorFlow. The builder config's name is a hash of the data config, so two different configs never
share (and silently reuse) one prepared directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import tensorflow_datasets as tfds

from vrrl_jax.tasks.frozenlake import data as frozenlake


@dataclasses.dataclass(eq=False)
class FrozenLakeBuilderConfig(tfds.core.BuilderConfig):
  data: frozenlake.FrozenLakeDataConfig = dataclasses.field(default_factory=frozenlake.FrozenLakeDataConfig)


def builder_config(cfg: frozenlake.FrozenLakeDataConfig) -> FrozenLakeBuilderConfig:
  cfg.validate()
  fields = dataclasses.asdict(cfg)
  if fields["data_dir"] is None:  # the packaged copy: the name stays that of the release's own files
    fields.pop("data_dir")
  digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
  return FrozenLakeBuilderConfig(name=f"cfg_{digest}", description=json.dumps(fields, sort_keys=True), data=cfg)


class FrozenLakeBuilder(tfds.core.GeneratorBasedBuilder):
  """FrozenLake maps with their rendered map images (PNG bytes)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Shared upstream maps + generated maps, Pillow renders."}
  BUILDER_CONFIGS = [builder_config(frozenlake.FrozenLakeDataConfig())]

  def _info(self) -> tfds.core.DatasetInfo:
    scalar = lambda dtype: tfds.features.Tensor(shape=(), dtype=dtype)  # noqa: E731
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          "map_id": scalar(np.str_),
          "split": scalar(np.str_),
          "level": scalar(np.int32),
          "layout": scalar(np.str_),
          "start_pos": scalar(np.int32),
          "target_pos": scalar(np.int32),
          "optimal_path_len": scalar(np.int32),
          "layout_hash": scalar(np.str_),
          "style": scalar(np.str_),
          "image_png": tfds.features.Tensor(shape=(None,), dtype=np.uint8),
        }
      ),
      homepage="https://github.com/fc2869/VRRL",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is local
    return {split: self._generate_examples(split) for split in self.builder_config.data.splits}

  def _generate_examples(self, split):
    for rec in frozenlake.iter_records(split, self.builder_config.data):
      yield rec["map_id"], rec


def make_builder(cfg: frozenlake.FrozenLakeDataConfig, data_dir: str) -> FrozenLakeBuilder:
  """A ``FrozenLakeBuilder`` for ``cfg`` writing array_record files under ``data_dir``."""
  return FrozenLakeBuilder(config=builder_config(cfg), data_dir=data_dir, file_format="array_record")


def load_split(split: str, cfg: frozenlake.FrozenLakeDataConfig, data_dir: str) -> list[frozenlake.Example]:
  """``data.load_split``'s examples, read from the dataset prepared under ``data_dir`` (prepared first if
  missing)."""
  builder = make_builder(cfg, data_dir)
  builder.download_and_prepare()
  ds = builder.as_data_source()[split]
  return [frozenlake.decode_record(ds[i]) for i in range(len(ds))]
