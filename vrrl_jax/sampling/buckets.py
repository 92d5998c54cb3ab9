"""Static-shape buckets for the sampler, and a record of the programs they compile.

Every jitted sampler function sees arrays padded up to a bucket, so a long run with ever-changing batch sizes,
prompt lengths, cache lengths and image sizes compiles a bounded number of programs. Sizes grow geometrically
(2^k and 1.5 * 2^k; chunk lengths in quarter octaves, since prefill compute is proportional to them), so the number
of buckets is logarithmic in the largest size.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math


def geometric_bucket(n: int, minimum: int = 1, multiple: int = 1, steps_per_octave: int = 2) -> int:
  """Smallest size >= max(n, minimum) of the form 2^k * (1 + i / steps_per_octave) that is a multiple of
  `multiple` (or, when no such size is near, n rounded up to `multiple`). steps_per_octave 2 gives 2^k and
  1.5 * 2^k."""
  if n < 0 or minimum < 1 or multiple < 1 or steps_per_octave < 1:
    raise ValueError(
      f"bucket needs n >= 0, minimum >= 1, multiple >= 1, steps_per_octave >= 1; got n={n} "
      f"minimum={minimum} multiple={multiple} steps_per_octave={steps_per_octave}"
    )
  target = max(n, minimum)
  size = 1
  while size <= 4 * target * multiple:
    for step in range(steps_per_octave):
      candidate = size + size * step // steps_per_octave
      if candidate >= target and candidate % multiple == 0:
        return candidate
    size *= 2
  return -(-target // multiple) * multiple


def power_of_two_bucket(n: int, minimum: int = 1) -> int:
  return max(minimum, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


@dataclasses.dataclass(frozen=True)
class Buckets:
  """How the sampler pads shapes.

  batch: powers of two, at least `min_batch` (and a multiple of the mesh's batch shards, which the sampler adds);
  chunk: prompt / continuation segment lengths; cache: KV-cache lengths; patches: vision patches of one call
  (a multiple of the merge unit). `max_cache_len` is a hard ceiling: a sample that needs more raises.
  `max_prefill_patches` splits a prefill whose images hold more patches into several calls over consecutive rows
  (None: one call): the vision tower attends over the packed patches of a call at a cost quadratic in their number.
  `min_patches_per_row` makes a call's patch bucket at least rows x that, so the bucket follows the batch bucket
  rather than how many of its rows carry an image this turn (one program per batch bucket instead of several).
  """

  min_batch: int = 1
  min_chunk: int = 16
  min_cache: int = 128
  min_patches: int = 64
  max_cache_len: int = 32768
  max_prefill_patches: int | None = None
  min_patches_per_row: int = 0

  def __post_init__(self):
    lowest = dict(
      min_batch=1,
      min_chunk=1,
      min_cache=1,
      min_patches=1,
      max_cache_len=1,
      min_patches_per_row=0,
      max_prefill_patches=1,
    )
    for name, low in lowest.items():
      value = getattr(self, name)
      if name == "max_prefill_patches" and value is None:  # None: no limit
        continue
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"sampler bucket {name} must be an int >= {low}, got {value!r}")

  def batch(self, n: int, multiple: int = 1) -> int:
    size = power_of_two_bucket(n, self.min_batch)
    return -(-size // multiple) * multiple

  def chunk(self, n: int) -> int:
    return geometric_bucket(n, self.min_chunk, 8, steps_per_octave=4)

  def cache(self, n: int) -> int:
    if n > self.max_cache_len:
      raise ValueError(f"a sample needs a KV cache of {n} slots, more than max_cache_len={self.max_cache_len}")
    return min(geometric_bucket(n, self.min_cache, 16), max(self.max_cache_len, n))

  def patches(self, n: int, merge_unit: int, rows: int = 1) -> int:
    return geometric_bucket(max(n, rows * self.min_patches_per_row), self.min_patches, merge_unit)


class CompileLog:
  """Counts the distinct (function, shape bucket) programs the sampler asked jax to build.

  jax compiles one program per distinct static signature; the sampler's signatures are exactly these keys, so
  `counts` is the number of compilations per function (barring jax's own cache eviction).
  """

  def __init__(self, name: str = "sampler"):
    self.name = name
    self.programs: dict[tuple, int] = {}

  def record(self, function: str, key: tuple) -> bool:
    """Notes one call; returns True (and logs) when this signature is new, i.e. jax compiles it now."""
    full_key = (function,) + tuple(key)
    new = full_key not in self.programs
    self.programs[full_key] = self.programs.get(full_key, 0) + 1
    if new:
      logging.info("%s: compiling %s for bucket %s (%d programs so far)", self.name, function, key, len(self.programs))
    return new

  @property
  def counts(self) -> dict[str, int]:
    """Programs compiled per function."""
    return dict(collections.Counter(key[0] for key in self.programs))

  @property
  def total(self) -> int:
    return len(self.programs)
