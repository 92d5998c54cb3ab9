"""A small HTML gallery of the ViGoRL tasks for inspection: scenes per kind and style (ID and OOD) with the ground
truth drawn, each at full size and as the tiny model sees it, and one scripted multi-turn transcript per kind with
every look numbered and every crop the environment showed.

  python -m vrrl_jax.tasks.vigorl --out docs/gallery/vigorl
"""

from __future__ import annotations

import html
import pathlib

import numpy as np
from PIL import Image, ImageDraw

from vrrl_jax.data import processor as processor_lib
from vrrl_jax.tasks.grounding import coords
from vrrl_jax.tasks.vigorl import protocol, splits, transcripts
from vrrl_jax.tasks.vigorl import spec as spec_lib

TRUTH_COLOR = (255, 0, 255)
LOOK_COLORS = ((255, 140, 0), (0, 170, 255), (0, 200, 80), (255, 0, 0))
# The tiny CPU configs' image budget: the view of every scene is at most 252 x 252.
TINY_IMAGES = processor_lib.ImageProcessorConfig.qwen2_5_vl(min_pixels=56 * 56, max_pixels=252 * 252)


def _spec(kind: str, style: str, seed: int, size: tuple[int, int], question: str) -> spec_lib.VigorlSpec:
  view = coords.processed_size(*size, TINY_IMAGES)
  return spec_lib.parse_spec(
    dict(
      kind=kind,
      style=style,
      seed=seed,
      width=size[0],
      height=size[1],
      question=question,
      view_width=view[0],
      view_height=view[1],
    )
  )


def view_with_truth(spec) -> Image.Image:
  """The scene as the model sees it (resized to the view), the target box outlined."""
  image = spec_lib.scene_of(spec).image.resize(spec.view_size, Image.Resampling.BICUBIC)
  ImageDraw.Draw(image).rectangle(spec_lib.view_box(spec), outline=TRUTH_COLOR, width=1)
  return image


def full_with_truth(spec, side: int = 504) -> Image.Image:
  """The scene with the target box, shrunk so its longer side is ``side`` (the gallery stays small)."""
  scene = spec_lib.scene_of(spec)
  image = scene.image.copy()
  ImageDraw.Draw(image).rectangle(scene.box, outline=TRUTH_COLOR, width=3)
  scale = side / max(image.size)
  return image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), Image.Resampling.LANCZOS)


def target_closeup(spec, half: int = 84) -> Image.Image:
  """The original pixels around the target (what a zoom can reveal), box outlined."""
  scene = spec_lib.scene_of(spec)
  x1, y1, x2, y2 = scene.box
  cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
  window = (cx - half, cy - half, cx + half, cy + half)
  image = scene.image.crop(window)
  ImageDraw.Draw(image).rectangle((x1 - window[0], y1 - window[1], x2 - window[0], y2 - window[1]), outline=TRUTH_COLOR)
  return image


def draw_looks(image: Image.Image, points) -> Image.Image:
  out = image.copy()
  draw = ImageDraw.Draw(out)
  for i, (x, y) in enumerate(points):
    color = LOOK_COLORS[i % len(LOOK_COLORS)]
    draw.ellipse((x - 5, y - 5, x + 5, y + 5), outline=color, width=2)
    draw.text((x + 7, y - 7), str(i + 1), fill=color)
  return out


def _figure(src: str, caption: str, width: int | None = None) -> str:
  size = f' width="{width}"' if width else ""
  return f'<figure><img src="{src}"{size}><figcaption>{html.escape(caption)}</figcaption></figure>'


def write_gallery(out_dir: str | pathlib.Path, seed: int = 0) -> pathlib.Path:
  """Writes ``index.html`` and its PNGs under ``out_dir``; returns the HTML path."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  parts = [
    "<!doctype html><meta charset='utf-8'><title>ViGoRL gallery</title>",
    "<style>body{font-family:sans-serif;max-width:1400px} figure{display:inline-block;margin:6px;"
    "vertical-align:top;max-width:520px} figcaption{font-size:12px} pre{white-space:pre-wrap;font-size:12px;"
    "background:#f4f4f4;padding:6px} img{border:1px solid #ccc}</style>",
    "<h1>ViGoRL tasks: visual search and GUI grounding</h1>",
    "<p>Magenta: the ground-truth box. Each scene shrunk to 504 px, as the tiny model sees it "
    "(the processor's resize to at most 252 x 252), and the original pixels around the target. Out-of-distribution styles are eval only.</p>",
  ]
  for kind, module in sorted(spec_lib.GENERATORS.items()):
    parts.append(f"<h2>{kind}</h2>")
    for i, style in enumerate(module.ID_STYLES + module.OOD_STYLES):
      tag = "OOD" if style in module.OOD_STYLES else "ID"
      size = module.SIZES["small"]["ood" if tag == "OOD" and i % 2 else "id"][0]
      question = module.QUESTIONS[i % len(module.QUESTIONS)]
      spec = _spec(kind, style, seed + i, size, question)
      scene = spec_lib.scene_of(spec)
      full = f"{kind}_{style}.png"
      full_with_truth(spec).save(out / full, optimize=True)
      view = f"{kind}_{style}_view.png"
      view_with_truth(spec).save(out / view, optimize=True)
      answer = f" -> {scene.answer}" if scene.answer else ""
      caption = f"{style} ({tag}, {size[0]}x{size[1]}): {scene.question}{answer}"
      close = f"{kind}_{style}_target.png"
      target_closeup(spec).save(out / close, optimize=True)
      parts.append(_figure(full, caption))
      parts.append(_figure(view, f"seen at {spec.view_width}x{spec.view_height}"))
      parts.append(_figure(close, "the target at full resolution (168 px around it)"))
  parts.append("<h2>Scripted multi-turn transcripts (a wrong look, the wait, the right look)</h2>")
  for kind, module in sorted(spec_lib.GENERATORS.items()):
    (spec,) = splits.make_split(
      "train", 1, seed + 7, kind=kind, preset="small", questions=module.QUESTIONS[:1], image_config=TINY_IMAGES
    )
    dot = kind == "gui"  # ViGoRL's settings: the dot for GUI grounding, none for visual search
    config = transcripts.TranscriptConfig(p_wrong_first=1.0, p_another_wrong=0.0, dot=dot)
    messages = transcripts.make_messages(spec, np.random.default_rng(seed), config)
    turns = [m["content"] for m in messages if m["role"] == "assistant"]
    looks = [protocol.read_turn(t).point for t in turns if protocol.read_turn(t).point is not None]
    parts.append(f"<h3>{kind}: {html.escape(spec_lib.scene_of(spec).question)}</h3>")
    name = f"transcript_{kind}.png"
    draw_looks(view_with_truth(spec), looks).save(out / name, optimize=True)
    parts.append(_figure(name, "the view with every look, numbered by turn", width=2 * spec.view_width))
    crops = [p["image"] for m in messages[1:] if m["role"] == "user" for p in m["content"] if p["type"] == "image"]
    for j, crop in enumerate(crops):
      crop_name = f"transcript_{kind}_crop{j + 1}.png"
      crop.save(out / crop_name, optimize=True)
      parts.append(_figure(crop_name, f"the crop after look {j + 1}"))
    parts.append("<pre>" + html.escape("\n\n".join(f"[turn {j + 1}]\n{t}" for j, t in enumerate(turns))) + "</pre>")
    prompt = messages[0]["content"][-1]["text"]
    parts.append("<details><summary>task prompt</summary><pre>" + html.escape(prompt) + "</pre></details>")
  path = out / "index.html"
  path.write_text("\n".join(parts) + "\n")
  return path
