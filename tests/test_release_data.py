"""The packaged release map files: byte-identical to the published ones (../shared), checked on read, installable."""

import gzip
import hashlib
import json
import re

import pytest

from vrrl_jax.tasks.frozenlake import release_data


@pytest.mark.parametrize("name", release_data.FILES)
def test_packaged_copy_is_the_published_file(name, shared_frozenlake_dir):
  published = (shared_frozenlake_dir / name).read_bytes()
  packaged = gzip.decompress((release_data.PACKAGED_DIR / f"{name}.gz").read_bytes())
  assert packaged == published
  assert release_data.packaged_checksums()[name] == hashlib.sha256(published).hexdigest()
  assert release_data.read_maps(name) == json.loads(published)


def test_source_notes_name_upstream_paths_licence_and_checksums():
  notes = (release_data.PACKAGED_DIR / "SOURCE.md").read_text()
  assert "github.com/fc2869/VRRL" in notes and "Apache License 2.0" in notes
  assert "data/FrozenLake/eval_data/eval_data.json" in notes and "data/FrozenLake/rl_train/rl_3k/maps.json" in notes
  licence = (release_data.PACKAGED_DIR / "LICENSE").read_text()
  assert "Apache License" in licence and "Version 2.0, January 2004" in licence
  sums = (release_data.PACKAGED_DIR / "SHA256SUMS").read_text().splitlines()
  assert sorted(line.split()[1] for line in sums) == sorted(release_data.FILES)
  assert all(re.fullmatch(r"[0-9a-f]{64}  \S+", line) for line in sums)


def test_a_damaged_packaged_file_is_named(tmp_path, monkeypatch):
  for name in release_data.FILES:
    (tmp_path / f"{name}.gz").write_bytes(gzip.compress(b"[]"))
  (tmp_path / "SHA256SUMS").write_text((release_data.PACKAGED_DIR / "SHA256SUMS").read_text())
  monkeypatch.setattr(release_data, "PACKAGED_DIR", tmp_path)
  with pytest.raises(release_data.ReleaseDataError, match=r"eval_L3-L6.json.gz is damaged: sha256"):
    release_data.read_maps(release_data.EVAL_FILE)
  (tmp_path / "rl_maps.json.gz").unlink()
  with pytest.raises(release_data.ReleaseDataError, match="installed without its data"):
    release_data.read_maps(release_data.TRAIN_FILE)


def test_a_user_directory_is_read_plain_or_gzipped(tmp_path):
  maps = [{"layout": ["SF", "FG"]}]
  (tmp_path / "eval_L3-L6.json").write_text(json.dumps(maps))
  (tmp_path / "rl_maps.json.gz").write_bytes(gzip.compress(json.dumps(maps).encode()))
  release_data.check_data_dir(tmp_path)
  assert release_data.read_maps(release_data.EVAL_FILE, tmp_path) == maps
  assert release_data.read_maps(release_data.TRAIN_FILE, tmp_path) == maps
  (tmp_path / "eval_L3-L6.json").write_text("{")
  with pytest.raises(release_data.ReleaseDataError, match="not valid JSON"):
    release_data.read_maps(release_data.EVAL_FILE, tmp_path)
  (tmp_path / "eval_L3-L6.json").write_text("{}")
  with pytest.raises(release_data.ReleaseDataError, match="expected a JSON list"):
    release_data.read_maps(release_data.EVAL_FILE, tmp_path)
