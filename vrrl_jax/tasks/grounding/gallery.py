"""A small HTML gallery of the grounding task for inspection: scenes per kind and style (ID and OOD) with the
ground-truth box and point drawn, the question, a few large renders, and one scripted transcript per kind with its
points and the crops the environment showed. ``python -m vrrl_jax.tasks.grounding --out docs/gallery/grounding``.
"""

from __future__ import annotations

import html
import pathlib

import numpy as np
from PIL import Image, ImageDraw

from vrrl_jax.tasks.grounding import content, scenes, splits, styles, transcripts

TRUTH_COLOR = (255, 0, 255)
POINT_COLORS = ((255, 140, 0), (0, 170, 255), (0, 200, 80), (255, 0, 0))


def draw_truth(image: Image.Image, question: scenes.Question) -> Image.Image:
  """A copy with the target box outlined and a cross on the target point."""
  out = image.copy()
  draw = ImageDraw.Draw(out)
  draw.rectangle(question.box, outline=TRUTH_COLOR, width=2)
  x, y = question.point
  draw.line((x - 4, y, x + 4, y), fill=TRUTH_COLOR, width=1)
  draw.line((x, y - 4, x, y + 4), fill=TRUTH_COLOR, width=1)
  return out


def draw_points(image: Image.Image, points) -> Image.Image:
  """A copy with each point as a numbered ring (1-based, in turn order)."""
  out = image.copy()
  draw = ImageDraw.Draw(out)
  for i, (x, y) in enumerate(points):
    color = POINT_COLORS[i % len(POINT_COLORS)]
    draw.ellipse((x - 6, y - 6, x + 6, y + 6), outline=color, width=2)
    draw.text((x + 8, y - 8), str(i + 1), fill=color)
  return out


def _pick(kind: str, style: str, seed: int, size=None) -> scenes.GroundingSpec:
  name = "eval_ood" if styles.get_style(style).ood else "train"
  sizes = None if size is None else (size,)
  return splits.make_split(name, 1, seed, (style,), kinds=(kind,), sizes=sizes)[0]


def _save(image: Image.Image, out: pathlib.Path, name: str) -> str:
  image.save(out / name, optimize=True)
  return name


def _figure(src: str, caption: str, width: int | None = None) -> str:
  size = f' width="{width}"' if width else ""
  return f'<figure><img src="{src}"{size}><figcaption>{html.escape(caption)}</figcaption></figure>'


def write_gallery(out_dir: str | pathlib.Path, seed: int = 0) -> pathlib.Path:
  """Writes ``index.html`` and its PNGs under ``out_dir``; returns the HTML path."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  parts = [
    "<!doctype html><meta charset='utf-8'><title>Grounding gallery</title>",
    "<style>body{font-family:sans-serif;max-width:1400px} figure{display:inline-block;margin:6px;"
    "vertical-align:top;max-width:270px} figcaption{font-size:12px} pre{white-space:pre-wrap;font-size:12px;"
    "background:#f4f4f4;padding:6px} img{border:1px solid #ccc}</style>",
    "<h1>Grounding task: tables and charts</h1>",
    "<p>Magenta: the ground-truth box and point. Small preset (252 x 252, the tiny model's image) unless noted. "
    "In-distribution styles: "
    + ", ".join(styles.ID_STYLES)
    + "; out-of-distribution (eval only): "
    + ", ".join(styles.OOD_STYLES)
    + ".</p>",
  ]
  for kind in content.KINDS:
    parts.append(f"<h2>{kind}</h2>")
    for i, style in enumerate(styles.STYLES):
      spec = _pick(kind, style, seed + i)
      question = scenes.scene_question(spec)
      image, _ = scenes.render_scene(spec)
      name = _save(draw_truth(image, question), out, f"{kind}_{style}.png")
      tag = "OOD" if styles.get_style(style).ood else "ID"
      parts.append(_figure(name, f"{style} ({tag}, {spec.width}x{spec.height}): {question.text}"))
  parts.append("<h2>Large and OOD sizes</h2>")
  for kind in content.KINDS:
    for style, size in (("plain", (896, 672)), ("dark", (1008, 756)), ("dense", (280, 224))):
      spec = _pick(kind, style, seed, size)
      question = scenes.scene_question(spec)
      image, _ = scenes.render_scene(spec)
      name = _save(draw_truth(image, question), out, f"{kind}_{style}_{size[0]}x{size[1]}.png")
      parts.append(_figure(name, f"{style} {size[0]}x{size[1]}: {question.text}", width=min(size[0], 264)))
  parts.append("<h2>Scripted transcripts</h2>")
  rng = np.random.default_rng(seed)
  for kind in content.KINDS:
    spec = _pick(kind, "plain", seed + 7)
    question = scenes.scene_question(spec)
    data = scenes.scene_data(spec)
    others = [
      name
      for name, _ in scenes.layout(spec).elements
      if name.startswith("cell:" if data.kind == content.TABLE else "bar:") and name != question.target
    ]
    wrong = [others[int(rng.integers(len(others)))]]
    tr = transcripts.make_transcript(spec, rng, wrong_elements=wrong)
    scene_png = _save(draw_points(tr.image, tr.points), out, f"transcript_{kind}.png")
    parts.append(f"<h3>{kind}: {html.escape(question.text)}</h3>")
    parts.append(_figure(scene_png, "the scene with every point, numbered by turn"))
    for j, crop in enumerate(tr.feedback_images):
      crop_png = _save(crop, out, f"transcript_{kind}_crop{j + 1}.png")
      parts.append(_figure(crop_png, f"crop after turn {j + 1} (shown 2x)", width=2 * crop.size[0]))
    parts.append("<pre>" + html.escape("\n\n".join(f"[turn {j + 1}]\n{t}" for j, t in enumerate(tr.turns))) + "</pre>")
    parts.append("<details><summary>task prompt</summary><pre>" + html.escape(tr.prompt) + "</pre></details>")
  path = out / "index.html"
  path.write_text("\n".join(parts) + "\n")
  return path
