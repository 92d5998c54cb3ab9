"""Train and eval specs for the ViGoRL tasks, disjoint by construction.

A scene's logical content is a function of (kind, seed, question) alone (the generators draw the layout from the
seed before choosing pixels or style), so that triple is its identity: those whose sha256 falls in one bucket of
``EVAL_BUCKETS`` are eval-only, all others train-only, in every style and size (the same rule as the grounding
task's, without generating the eval split first). ``tests/test_vigorl_task.py`` checks that the content JSON of an
eval split shares nothing with a train split's.

Splits: ``"train"`` (in-distribution styles and sizes), ``"eval_id"`` (the same styles and sizes, eval scenes),
``"eval_ood"`` (out-of-distribution styles only, at the preset's ID and OOD sizes, eval scenes). The question type
is drawn uniformly from ``questions``.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from vrrl_jax.data import processor as processor_lib
from vrrl_jax.tasks.grounding import coords
from vrrl_jax.tasks.vigorl import spec as spec_lib

SPLITS = ("train", "eval_id", "eval_ood")
EVAL_BUCKETS = 10


def is_eval_scene(kind: str, seed: int, question: str) -> bool:
  digest = hashlib.sha256(f"{kind}:{seed}:{question}".encode()).hexdigest()
  return int(digest[:16], 16) % EVAL_BUCKETS == 0


def sizes(kind: str, name: str, preset: str) -> tuple[tuple[int, int], ...]:
  presets = spec_lib.generator(kind).SIZES
  if preset not in presets:
    raise ValueError(f"unknown size preset {preset!r} for {kind}; choose one of {sorted(presets)}")
  found = presets[preset]["id"] + (presets[preset]["ood"] if name == "eval_ood" else ())
  return tuple(tuple(s) for s in found)


def make_split(
  name: str,
  n: int,
  seed: int,
  *,
  kind: str,
  preset: str,
  questions: Sequence[str],
  image_config: processor_lib.ImageProcessorConfig,
) -> list[spec_lib.VigorlSpec]:
  """``n`` distinct specs of split ``name``, deterministic in the arguments."""
  if name not in SPLITS:
    raise ValueError(f"unknown split {name!r}; choose one of {SPLITS}")
  module = spec_lib.generator(kind)
  questions = tuple(questions)
  if not questions or any(q not in module.QUESTIONS for q in questions):
    raise ValueError(f"questions {questions!r}: choose a non-empty subset of {module.QUESTIONS}")
  styles = module.OOD_STYLES if name == "eval_ood" else module.ID_STYLES
  choices = sizes(kind, name, preset)
  want_eval = name != "train"
  rng = np.random.default_rng([seed, SPLITS.index(name), sorted(spec_lib.GENERATORS).index(kind)])
  out, seen, tries = [], set(), 0
  while len(out) < n:
    tries += 1
    if tries > 100 * n + 1000:
      raise ValueError(f"split {name!r}: found only {len(out)} of {n} specs after {tries} tries")
    scene_seed = int(rng.integers(2**31))
    question = questions[int(rng.integers(len(questions)))]
    style = styles[int(rng.integers(len(styles)))]
    width, height = choices[int(rng.integers(len(choices)))]
    if (scene_seed, question) in seen or is_eval_scene(kind, scene_seed, question) != want_eval:
      continue
    view_width, view_height = coords.processed_size(width, height, image_config)
    spec = spec_lib.parse_spec(
      dict(
        kind=kind,
        style=style,
        seed=scene_seed,
        width=width,
        height=height,
        question=question,
        view_width=view_width,
        view_height=view_height,
      )
    )
    if want_eval:  # eval splits are small: keep only scenes that render (an OOD size may not fit a layout)
      try:
        spec_lib.scene_of(spec)
      except ValueError:
        continue
    seen.add((scene_seed, question))
    out.append(spec)
  return out
