"""FrozenLake records: one map per example, its map image rendered at build time.

Two paths produce the *same* records:

- ``iter_records(split, cfg)``: pure Python + Pillow, straight from the release's map files (packaged, see
  ``release_data.py``) and the generator. It is the default for training and evaluation: the whole task is 4,000-odd tiny maps, a map
  renders in about a millisecond, so there is nothing to gain from a build step, and unit tests and the
  CPU demo need no TensorFlow and no prepared data directory.
- ``FrozenLakeBuilder``: a tensorflow-datasets builder (array_record files, every feature a
  ``tfds.features.Tensor``, so neither building nor reading needs TensorFlow) for runs that want a
  versioned, materialised dataset readable by many hosts with ``builder.as_data_source()`` (random
  access, works with grain or a plain loop). ``tfds_builder.load_split`` reads it back into the
  same ``Example`` objects as the light path.

Images are stored as PNG bytes in a uint8 vector: exact, about 50x smaller than raw pixels, and
encoded with Pillow (``tfds.features.Image`` would need TensorFlow to encode).

Splits: ``train`` (the release's rl_maps.json training maps and/or generated maps), ``eval_L3``..``eval_L6``
(the release's 1,000 eval maps, 250 per level) and ``eval_L{n}`` for every generated eval level (7 by
default, rendered in the out-of-distribution style like upstream's L7). Generated training maps never
collide with any eval layout (``layout_hash``).
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any, Iterator

import numpy as np
from PIL import Image

from vrrl_jax.tasks.frozenlake import generate, maps, release_data, render

SHARED_EVAL_LEVELS = (3, 4, 5, 6)
TRAIN_SOURCES = ("release", "generated", "both")


@dataclasses.dataclass(frozen=True)
class FrozenLakeDataConfig:
  """What goes into each split. ``data_dir``: a directory with the release's map files (None: the copy shipped
  in the package). ``max_per_split`` truncates every split (tests, quick runs)."""

  data_dir: str | None = None
  train_source: str = "release"
  generated_train_levels: tuple[int, ...] = (4, 5)
  generated_train_per_level: int = 0
  generated_train_seed: int = 0
  min_path_len: int = generate.DEFAULT_MIN_PATH_LEN
  generated_eval_levels: tuple[int, ...] = (7,)
  generated_eval_per_level: int = 250
  generated_eval_seed: int = 7_000
  train_style: str = "default"
  eval_style: str = "default"
  ood_style: str = "ood"  # style of generated eval levels, as upstream's L7 differed in style
  max_per_split: int | None = None

  def validate(self) -> "FrozenLakeDataConfig":
    release_data.check_data_dir(self.data_dir)
    if self.train_source not in TRAIN_SOURCES:
      raise ValueError(f"train_source must be one of {TRAIN_SOURCES}, got {self.train_source!r}")
    if self.train_source in ("generated", "both") and self.generated_train_per_level <= 0:
      raise ValueError(f"train_source={self.train_source!r} needs generated_train_per_level > 0")
    for lvl in self.generated_eval_levels:
      if lvl in SHARED_EVAL_LEVELS:
        raise ValueError(
          f"eval level {lvl} comes from the release's eval maps; generated_eval_levels must avoid {SHARED_EVAL_LEVELS}"
        )
      generate.check_level(lvl)
    for lvl in self.generated_train_levels:
      generate.check_level(lvl)
    for style in (self.train_style, self.eval_style, self.ood_style):
      render.get_style(style)
    if self.max_per_split is not None and self.max_per_split <= 0:
      raise ValueError(f"max_per_split must be positive or None, got {self.max_per_split}")
    return self

  @property
  def splits(self) -> tuple[str, ...]:
    levels = sorted(set(SHARED_EVAL_LEVELS) | set(self.generated_eval_levels))
    return ("train",) + tuple(f"eval_L{lvl}" for lvl in levels)


@dataclasses.dataclass(frozen=True)
class Example:
  """One decoded record: the spec, its map image and where it came from."""

  map_id: str
  split: str
  spec: maps.MapSpec
  optimal_path_len: int
  style: str
  image: np.ndarray  # uint8 [H, W, 3]

  def to_spec_dict(self) -> dict[str, Any]:
    return self.spec.to_dict()


def _png_bytes(img: Image.Image) -> np.ndarray:
  buf = io.BytesIO()
  img.save(buf, format="PNG", optimize=False, compress_level=6)
  return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def _decode_png(data: np.ndarray) -> np.ndarray:
  with Image.open(io.BytesIO(np.asarray(data, dtype=np.uint8).tobytes())) as im:
    if im.mode != "RGB":
      raise ValueError(f"stored map image has mode {im.mode}, expected RGB")
    return np.asarray(im, dtype=np.uint8).copy()


def _record(map_id: str, split: str, spec: maps.MapSpec, style: str) -> dict[str, Any]:
  n_opt = maps.shortest_path_len(spec)
  if n_opt is None:
    raise maps.MapSpecError(f"{map_id}: goal unreachable")
  return {
    "map_id": map_id,
    "split": split,
    "level": np.int32(spec.level),
    "layout": "".join(spec.layout),
    "start_pos": np.int32(spec.start_pos),
    "target_pos": np.int32(spec.target_pos),
    "optimal_path_len": np.int32(n_opt),
    "layout_hash": spec.layout_hash,
    "style": style,
    "image_png": _png_bytes(render.render_map(spec, style)),
  }


def _release_maps(cfg: FrozenLakeDataConfig, name: str) -> list[dict[str, Any]]:
  return release_data.read_maps(name, cfg.data_dir)


def _excluded_hashes(cfg: FrozenLakeDataConfig) -> set[str]:
  return generate.eval_layout_hashes(cfg.data_dir)


def iter_specs(split: str, cfg: FrozenLakeDataConfig) -> Iterator[tuple[str, maps.MapSpec, str]]:
  """(map_id, spec, style) of every example of a split, in order, without rendering."""
  if split == "train":
    if cfg.train_source in ("release", "both"):
      for entry in _release_maps(cfg, release_data.TRAIN_FILE):
        yield entry["map_id"], maps.parse_spec(entry, require_reachable=True), cfg.train_style
    if cfg.train_source in ("generated", "both"):
      exclude = _excluded_hashes(cfg)
      if cfg.train_source == "both":
        exclude |= {maps.layout_hash(e["layout"]) for e in _release_maps(cfg, release_data.TRAIN_FILE)}
      for lvl in cfg.generated_train_levels:
        specs = generate.generate_maps(
          lvl,
          cfg.generated_train_per_level,
          cfg.generated_train_seed + lvl,
          min_path_len=cfg.min_path_len,
          exclude=exclude,
        )
        exclude |= {s.layout_hash for s in specs}
        for i, spec in enumerate(specs):
          yield f"gen_train_L{lvl}_{i:06d}", spec, cfg.train_style
    return
  if not split.startswith("eval_L") or not split[6:].isdigit():
    raise ValueError(f"unknown split {split!r}; splits are {cfg.splits}")
  level = int(split[6:])
  if level in SHARED_EVAL_LEVELS:
    for entry in _release_maps(cfg, release_data.EVAL_FILE):
      if entry["metadata"]["level"] == level:
        yield entry["id"], maps.parse_spec(entry["metadata"], require_reachable=True), cfg.eval_style
  elif level in cfg.generated_eval_levels:
    # Disjoint from every training source and the release's eval maps.
    exclude = _excluded_hashes(cfg) | {
      maps.layout_hash(e["layout"]) for e in _release_maps(cfg, release_data.TRAIN_FILE)
    }
    specs = generate.generate_maps(
      level,
      cfg.generated_eval_per_level,
      cfg.generated_eval_seed + level,
      min_path_len=cfg.min_path_len,
      exclude=exclude,
    )
    for i, spec in enumerate(specs):
      yield f"gen_eval_L{level}_{i:06d}", spec, cfg.ood_style
  else:
    raise ValueError(f"unknown split {split!r}; splits are {cfg.splits}")


def iter_records(split: str, cfg: FrozenLakeDataConfig = FrozenLakeDataConfig()) -> Iterator[dict[str, Any]]:
  """The records of one split, exactly as the TFDS builder stores them."""
  cfg.validate()
  for i, (map_id, spec, style) in enumerate(iter_specs(split, cfg)):
    if cfg.max_per_split is not None and i >= cfg.max_per_split:
      return
    yield _record(map_id, split, spec, style)


def _as_str(x) -> str:
  if isinstance(x, bytes):
    return x.decode()
  if isinstance(x, np.ndarray):
    return _as_str(x.item())
  return str(x)


def decode_record(rec: dict[str, Any]) -> Example:
  """A record from either path (TFDS gives bytes for strings) into an ``Example``."""
  level = int(rec["level"])
  flat = _as_str(rec["layout"])
  if len(flat) != level * level:
    raise ValueError(f"record {rec.get('map_id')!r}: layout has {len(flat)} cells, level {level} needs {level**2}")
  layout = tuple(flat[r * level : (r + 1) * level] for r in range(level))
  spec = maps.parse_spec(maps.MapSpec(layout, int(rec["start_pos"]), int(rec["target_pos"])))
  if spec.layout_hash != _as_str(rec["layout_hash"]):
    raise ValueError(f"record {_as_str(rec['map_id'])!r}: layout_hash does not match its layout (corrupt record)")
  return Example(
    map_id=_as_str(rec["map_id"]),
    split=_as_str(rec["split"]),
    spec=spec,
    optimal_path_len=int(rec["optimal_path_len"]),
    style=_as_str(rec["style"]),
    image=_decode_png(rec["image_png"]),
  )


def load_split(split: str, cfg: FrozenLakeDataConfig = FrozenLakeDataConfig()) -> list[Example]:
  """All examples of a split, rendered now (``tfds_builder.load_split`` reads the same from a prepared dataset)."""
  return [decode_record(r) for r in iter_records(split, cfg)]
