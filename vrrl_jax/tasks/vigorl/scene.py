"""What a ViGoRL scene generator returns (GROUNDING_SPEC section 4): the image, the question and its ground truth.

Two generators fill it, one module each: ``search`` (visual search: a large cluttered canvas, one small target) and
``gui`` (mock screens: "click X"). Each provides ``KIND``, ``ID_STYLES``, ``OOD_STYLES``, ``QUESTIONS``, ``SIZES``
(``{preset: {"id": sizes, "ood": sizes}}``) and ``scene(style, seed, width, height, question) -> Scene``,
deterministic in its arguments.

Pixels here are the *original* image's. The model sees the image after the processor's resize; the task scales
boxes to that size (``vrrl_jax.tasks.grounding.coords``) and cuts crops from the original.
"""

from __future__ import annotations

import dataclasses

from PIL import Image

Box = tuple[int, int, int, int]  # (x1, y1, x2, y2), inclusive, original pixels
POINT, STRING = "point", "string"


@dataclasses.dataclass(frozen=True)
class Element:
  """One drawn thing a reasoning step can cite: a short description ("the blue circle", "the 'Save' button") and
  its box."""

  description: str
  box: Box


@dataclasses.dataclass(frozen=True)
class Scene:
  """``answer_type`` POINT: the answer is a point inside ``box``; STRING: the answer is ``answer`` (lower case).
  ``content``: canonical JSON of the scene's logical content (what is drawn and where, as fractions of the canvas;
  not the style or the pixel size), whose hash keeps train and eval disjoint. ``target`` is the element the question
  is about (its box is ``box``); ``elements`` are the other things a model might look at, target excluded."""

  image: Image.Image
  question: str
  answer_type: str
  answer: str
  box: Box
  target: Element
  elements: tuple[Element, ...]
  content: str
