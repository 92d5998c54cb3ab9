"""FrozenLake records: split contents against the release's map files, and the TFDS path equal to the light path."""

import numpy as np
import pytest

from vrrl_jax.tasks.frozenlake import release_data
from vrrl_jax.tasks.frozenlake import data as fl
from vrrl_jax.tasks.frozenlake import maps, render
from vrrl_jax.tasks.frozenlake import tfds_builder


def _cfg(**kw):
  return fl.FrozenLakeDataConfig(**kw)


def test_release_splits_hold_every_release_map():
  cfg = _cfg()
  train = list(fl.iter_specs("train", cfg))
  rl = release_data.read_maps(release_data.TRAIN_FILE)
  assert [m for m, _, _ in train] == [e["map_id"] for e in rl]
  assert [s.layout_hash for _, s, _ in train] == [e["layout_hash"] for e in rl]
  ev = release_data.read_maps(release_data.EVAL_FILE)
  for level in (3, 4, 5, 6):
    got = list(fl.iter_specs(f"eval_L{level}", cfg))
    want = [e for e in ev if e["metadata"]["level"] == level]
    assert len(got) == len(want) == 250
    for (map_id, spec, style), e in zip(got, want):
      assert map_id == e["id"] and style == "default"
      assert spec.layout == tuple("".join(r) for r in e["metadata"]["layout"])
      assert (spec.start_pos, spec.target_pos) == (e["metadata"]["start_pos"], e["metadata"]["target_pos"])


def test_generated_splits_are_disjoint_from_eval_and_release_train():
  cfg = _cfg(
    train_source="both", generated_train_levels=(3, 4), generated_train_per_level=100, generated_eval_per_level=50
  )
  ev = release_data.read_maps(release_data.EVAL_FILE)
  eval_hashes = {maps.layout_hash(e["metadata"]["layout"]) for e in ev}
  train = list(fl.iter_specs("train", cfg))
  assert len(train) == 3000 + 200
  train_hashes = [s.layout_hash for _, s, _ in train]
  assert len(set(train_hashes)) == len(train_hashes)
  assert not eval_hashes & set(train_hashes)
  l7 = list(fl.iter_specs("eval_L7", cfg))
  assert len(l7) == 50 and all(s.level == 7 and style == "ood" for _, s, style in l7)
  assert not {s.layout_hash for _, s, _ in l7} & (eval_hashes | set(train_hashes))


def test_records_decode_to_the_rendered_map():
  cfg = _cfg(max_per_split=3, generated_eval_per_level=3)
  for split in cfg.splits:
    examples = fl.load_split(split, cfg)
    assert len(examples) == 3
    for ex in examples:
      assert ex.image.dtype == np.uint8 and ex.image.ndim == 3
      np.testing.assert_array_equal(ex.image, np.asarray(render.render_map(ex.spec, ex.style)))
      assert ex.optimal_path_len == maps.shortest_path_len(ex.spec)


def test_tfds_path_reads_the_same_records(tmp_path):
  cfg = _cfg(max_per_split=4, generated_eval_per_level=4)
  for split in ("train", "eval_L3", "eval_L7"):
    mem = fl.load_split(split, cfg)
    tf = tfds_builder.load_split(split, cfg, str(tmp_path))
    assert sorted(e.map_id for e in mem) == sorted(e.map_id for e in tf)
    by_id = {e.map_id: e for e in tf}
    for e in mem:
      other = by_id[e.map_id]
      assert other.spec == e.spec and other.style == e.style and other.split == split
      np.testing.assert_array_equal(other.image, e.image)


@pytest.mark.parametrize(
  "kw, msg",
  [
    (dict(train_source="web"), "train_source"),
    (dict(train_source="generated"), "generated_train_per_level"),
    (dict(generated_eval_levels=(5,)), "release's eval maps"),
    (dict(train_style="sepia"), "unknown render style"),
    (dict(max_per_split=0), "max_per_split"),
    (dict(data_dir="/nonexistent/frozenlake"), "not a directory"),
  ],
)
def test_bad_config_is_named(kw, msg):
  with pytest.raises(ValueError, match=msg):
    list(fl.iter_records("train", _cfg(**kw)))


def test_unknown_split_and_corrupt_record():
  cfg = _cfg(max_per_split=1)
  with pytest.raises(ValueError, match="unknown split"):
    list(fl.iter_records("validation", cfg))
  rec = next(fl.iter_records("eval_L3", cfg))
  rec["layout_hash"] = "0" * 64
  with pytest.raises(ValueError, match="layout_hash"):
    fl.decode_record(rec)


def test_a_user_data_dir_gives_the_same_splits(shared_frozenlake_dir, tmp_path):
  """``data_dir`` pointing at a copy of the release files (here ../shared's) yields the packaged splits."""
  packaged, user = (
    _cfg(generated_eval_per_level=20),
    _cfg(data_dir=str(shared_frozenlake_dir), generated_eval_per_level=20),
  )
  for split in ("train", "eval_L4", "eval_L7"):
    assert list(fl.iter_specs(split, user)) == list(fl.iter_specs(split, packaged))
  (tmp_path / "eval_L3-L6.json").write_text("[]")
  with pytest.raises(ValueError, match="no rl_maps.json"):
    _cfg(data_dir=str(tmp_path)).validate()
