"""One ViGoRL example: which scene, which question, and the size the model sees it at.

``VigorlSpec`` round-trips through a JSON-able dict (the replay buffer and the eval records store it). It holds the
view size (the image after the processor's resize) so that everything that reads model text (the episode, the
reward, the probe) agrees on coordinates without the run config: ground truth is the scene's box scaled to the view
(``vrrl_jax.tasks.grounding.coords``), written as ViGoRL's ground-truth string.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
from typing import Any, Mapping

from vrrl_jax.tasks.grounding import coords
from vrrl_jax.tasks.vigorl import gui, search
from vrrl_jax.tasks.vigorl.scene import POINT, Box, Scene

GENERATORS = {search.KIND: search, gui.KIND: gui}
SPEC_KEYS = ("kind", "style", "seed", "width", "height", "question", "view_width", "view_height")


def generator(kind: str):
  """The scene module of a kind ("search" or "gui")."""
  if kind not in GENERATORS:
    raise ValueError(f"unknown ViGoRL scene kind {kind!r}; choose one of {sorted(GENERATORS)}")
  return GENERATORS[kind]


@dataclasses.dataclass(frozen=True)
class VigorlSpec:
  kind: str
  style: str
  seed: int
  width: int
  height: int
  question: str
  view_width: int
  view_height: int

  def to_dict(self) -> dict[str, Any]:
    return {k: getattr(self, k) for k in SPEC_KEYS}

  @property
  def size(self) -> tuple[int, int]:
    return self.width, self.height

  @property
  def view_size(self) -> tuple[int, int]:
    return self.view_width, self.view_height

  @property
  def question_id(self) -> str:
    return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

  @property
  def is_ood(self) -> bool:
    return self.style in generator(self.kind).OOD_STYLES


def _int(name: str, value, low: int) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
    raise ValueError(f"spec {name} must be an int >= {low}, got {value!r}")
  return int(value)


def parse_spec(spec: Mapping[str, Any] | VigorlSpec) -> VigorlSpec:
  """Validates a spec (a ``VigorlSpec`` or its dict); raises ValueError naming the problem."""
  raw = spec.to_dict() if isinstance(spec, VigorlSpec) else spec
  if not isinstance(raw, Mapping):
    raise ValueError(f"ViGoRL spec must be a mapping or VigorlSpec, got {type(spec).__name__}")
  missing, unknown = [k for k in SPEC_KEYS if k not in raw], sorted(set(raw) - set(SPEC_KEYS))
  if missing or unknown:
    raise ValueError(f"ViGoRL spec: missing keys {missing}, unknown keys {unknown}; expected {list(SPEC_KEYS)}")
  module = generator(raw["kind"])
  if raw["style"] not in module.ID_STYLES + module.OOD_STYLES:
    raise ValueError(f"{raw['kind']} style {raw['style']!r}: choose one of {module.ID_STYLES + module.OOD_STYLES}")
  if raw["question"] not in module.QUESTIONS:
    raise ValueError(f"{raw['kind']} question {raw['question']!r}: choose one of {module.QUESTIONS}")
  ints = {k: _int(k, raw[k], 0 if k == "seed" else 1) for k in ("seed", "width", "height", "view_width", "view_height")}
  return VigorlSpec(kind=raw["kind"], style=raw["style"], question=raw["question"], **ints)


def scene_of(spec) -> Scene:
  """The rendered scene (original pixels); the generators cache their latest scenes (a large one is ~15 MB)."""
  spec = parse_spec(spec)
  return generator(spec.kind).scene(spec.style, spec.seed, spec.width, spec.height, spec.question)


def view_box(spec) -> Box:
  """The target's box in view pixels (what the model's coordinates are checked against)."""
  spec = parse_spec(spec)
  return coords.scale_box(scene_of(spec).box, spec.size, spec.view_size)


def view_point(spec, box: Box) -> tuple[int, int]:
  """The centre of an original-pixel box, in view pixels (where a transcript looks)."""
  spec = parse_spec(spec)
  x1, y1, x2, y2 = coords.scale_box(box, spec.size, spec.view_size)
  return (x1 + x2) // 2, (y1 + y2) // 2


def ground_truth(spec) -> str:
  """ViGoRL's ground-truth string: ``"(x1, y1, x2, y2)"`` in view pixels for a point answer, else the answer."""
  scene = scene_of(spec)
  if scene.answer_type == POINT:
    return "({}, {}, {}, {})".format(*view_box(spec))
  return scene.answer
