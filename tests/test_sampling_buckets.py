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
