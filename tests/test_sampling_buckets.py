"""Bucket sizes: the smallest allowed size that fits, checked against brute-force enumeration."""

import pytest

from vrrl_jax.sampling.buckets import Buckets, CompileLog, geometric_bucket


def allowed_sizes(steps_per_octave, limit=1 << 16):
  sizes = set()
  power = 1
  while power <= limit:
    sizes.update(power + power * i // steps_per_octave for i in range(steps_per_octave))
    power *= 2
  return sorted(sizes)


@pytest.mark.parametrize("steps, multiple, minimum", [(2, 1, 1), (2, 16, 128), (4, 8, 16), (2, 4, 64)])
def test_geometric_bucket_is_smallest_fitting_size(steps, multiple, minimum):
  sizes = allowed_sizes(steps)
  for n in range(0, 3000, 7):
    expected = min(s for s in sizes if s >= max(n, minimum) and s % multiple == 0)
    assert geometric_bucket(n, minimum, multiple, steps) == expected, n


def test_bucket_waste_is_bounded():
  buckets = Buckets()
  for n in range(1, 5000):
    assert n <= buckets.chunk(n) <= max(1.25 * n + 8, buckets.min_chunk)
    assert n <= buckets.cache(n) <= max(1.5 * n + 16, buckets.min_cache)
  assert buckets.batch(5) == 8 and buckets.batch(3, multiple=4) == 4 and buckets.batch(9, multiple=4) == 16
  with pytest.raises(ValueError, match="max_cache_len"):
    buckets.cache(buckets.max_cache_len + 1)


def test_compile_log_counts_programs_per_function():
  log = CompileLog()
  assert log.record("decode", (8, 128)) and not log.record("decode", (8, 128))
  assert log.record("decode", (8, 256)) and log.record("append", (8, 32))
  assert log.counts == {"decode": 2, "append": 1} and log.total == 3


def test_min_patches_per_row_makes_the_patch_bucket_follow_the_batch():
  buckets = Buckets(min_patches_per_row=100)
  # 16 rows of which 3, 9 or 16 carry a 100-patch image this turn: one bucket, sized for the whole batch.
  assert {buckets.patches(n * 100, 4, rows=16) for n in (3, 9, 16)} == {geometric_bucket(1600, 64, 4)}
  assert buckets.patches(2000, 4, rows=16) == geometric_bucket(2000, 64, 4)  # more than one image a row: grows
  assert Buckets().patches(300, 4, rows=16) == geometric_bucket(300, 64, 4)  # default 0: patch count only


@pytest.mark.parametrize(
  "field, value",
  [
    ("min_batch", 0),
    ("min_cache", -1),
    ("min_patches_per_row", -1),
    ("max_prefill_patches", 0),
    ("min_chunk", 2.5),
    ("min_batch", True),
  ],
)
def test_buckets_reject_bad_fields(field, value):
  with pytest.raises(ValueError, match=field):
    Buckets(**{field: value})


def test_config_sections_are_checked():
  import ml_collections

  from vrrl_jax import run_config

  config = ml_collections.ConfigDict({"sampler": {"min_cache": 256, "min_cahce": 512}})
  with pytest.raises(ValueError, match="min_cahce"):
    run_config.sampler_buckets(config)
  section = ml_collections.ConfigDict({"update_min_rows": 0, "min_length": 384})
  with pytest.raises(ValueError, match="update_min_rows"):
    run_config.shape_floor(section, "update_min_rows", 1)
  assert run_config.shape_floor(section, "min_length", 64) == 384
  assert run_config.shape_floor(section, "min_patches", 256) == 256  # absent: the default
