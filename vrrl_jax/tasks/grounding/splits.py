"""Train and eval specs for the grounding task, disjoint by construction.

A scene's content hash (``scenes.scene_hash``: kind, labels, numbers; not style, size or question) decides which
side it may be used on: scenes with ``int(hash[:16], 16) % EVAL_BUCKETS == 0`` (one in ten) are eval-only, all
others train-only. So no table or chart shown in eval is ever trained on, in any style, size or question, whatever
``n`` and ``seed`` each split is made with, and without having to generate the eval splits first (FrozenLake
excludes the eval layouts' hashes explicitly; this is the same guarantee without the coordination).

Splits:

- ``"train"``: in-distribution styles, the preset's ID sizes, train scenes;
- ``"eval_id"``: the same styles and sizes, eval scenes;
- ``"eval_ood"``: out-of-distribution styles only, at the preset's ID and OOD sizes, eval scenes.

Questions: a family ("cell", "column_max", ... see ``content.FAMILIES``) is drawn uniformly, then one question of
it, so "the tallest bar" is not drowned by the many "bar labelled X" questions. Specs whose scene does not fit its
image at a legible font size are skipped (only happens with OOD sizes; see ``scenes``).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from vrrl_jax.tasks.grounding import content, scenes
from vrrl_jax.tasks.grounding import styles as style_lib

SPLITS = ("train", "eval_id", "eval_ood")
EVAL_BUCKETS = 10


def is_eval_scene(spec) -> bool:
  """True when the spec's scene is reserved for evaluation."""
  return int(scenes.scene_hash(spec)[:16], 16) % EVAL_BUCKETS == 0


def default_sizes(name: str, preset: str) -> tuple[tuple[int, int], ...]:
  if preset not in scenes.SIZE_PRESETS:
    raise ValueError(f"unknown size preset {preset!r}; choose one of {sorted(scenes.SIZE_PRESETS)}")
  if name == "eval_ood":
    return scenes.SIZE_PRESETS[preset] + scenes.OOD_SIZE_PRESETS[preset]
  return scenes.SIZE_PRESETS[preset]


def _check_styles(name: str, chosen: Sequence[str]) -> tuple[str, ...]:
  chosen = tuple(chosen)
  if not chosen:
    raise ValueError(f"split {name!r}: styles is empty")
  for style in chosen:
    st = style_lib.get_style(style)
    if name == "eval_ood" and not st.ood:
      raise ValueError(f"split 'eval_ood' takes only OOD styles {style_lib.OOD_STYLES}, got {style!r}")
    if name != "eval_ood" and st.ood:
      raise ValueError(f"split {name!r} takes only in-distribution styles {style_lib.ID_STYLES}, got {style!r}")
  return chosen


def make_split(
  name: str,
  n: int,
  seed: int,
  styles: Sequence[str] | None = None,
  *,
  kinds: Sequence[str] = content.KINDS,
  preset: str = "small",
  sizes: Sequence[tuple[int, int]] | None = None,
  exclude: Iterable[str] = (),
) -> list[scenes.GroundingSpec]:
  """``n`` specs of split ``name``, deterministic in its arguments; scenes are distinct within the split.

  ``styles``: defaults to the ID styles (train, eval_id) or the OOD styles (eval_ood); the wrong kind raises.
  ``exclude``: further scene hashes to avoid (e.g. another run's data).
  """
  if name not in SPLITS:
    raise ValueError(f"unknown split {name!r}; choose one of {SPLITS}")
  if isinstance(n, bool) or not isinstance(n, int) or n < 0:
    raise ValueError(f"n must be an int >= 0, got {n!r}")
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise ValueError(f"seed must be an int >= 0, got {seed!r}")
  if styles is None:
    styles = style_lib.OOD_STYLES if name == "eval_ood" else style_lib.ID_STYLES
  chosen = _check_styles(name, styles)
  kinds = tuple(content.check_kind(k) for k in kinds)
  if not kinds:
    raise ValueError("kinds is empty")
  sizes = tuple(tuple(s) for s in (default_sizes(name, preset) if sizes is None else sizes))
  if not sizes:
    raise ValueError("sizes is empty")
  want_eval = name != "train"
  seen = set(exclude)
  rng = np.random.default_rng([seed, SPLITS.index(name)])
  out: list[scenes.GroundingSpec] = []
  tries = 0
  while len(out) < n:
    tries += 1
    if tries > 100 * n + 1000:
      raise ValueError(f"split {name!r}: found only {len(out)} of {n} distinct fitting scenes after {tries} tries")
    kind = kinds[int(rng.integers(len(kinds)))]
    style = chosen[int(rng.integers(len(chosen)))]
    width, height = sizes[int(rng.integers(len(sizes)))]
    scene_seed = int(rng.integers(2**31))
    pick = float(rng.random()), float(rng.random())
    spec = scenes.parse_spec(dict(kind=kind, style=style, seed=scene_seed, width=width, height=height, question=0))
    h = scenes.scene_hash(spec)
    if h in seen or is_eval_scene(spec) != want_eval:
      continue
    templates = scenes.questions(spec)
    families = sorted({t.family for t in templates}, key=content.FAMILIES[kind].index)
    family = families[int(pick[0] * len(families))]
    indices = [i for i, t in enumerate(templates) if t.family == family]
    spec = scenes.parse_spec({**spec.to_dict(), "question": indices[int(pick[1] * len(indices))]})
    try:
      scenes.layout(spec)
    except ValueError:
      continue
    seen.add(h)
    out.append(spec)
  return out
