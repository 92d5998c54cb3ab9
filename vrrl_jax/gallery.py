"""Rollout gallery: one self-contained HTML page to look at what the policy actually does.

``write_gallery(path_html, episodes)`` writes a single file with every image embedded as a base64 PNG
``data:`` URI, so the page can be copied off a training host and opened anywhere with nothing beside it.
At the top a summary table (one row per episode, linking to its card, plus the mean of each numeric
metric over the episodes shown); below, one card per episode: the question's image and description, each assistant
turn's text followed by the feedback image the environment showed after it, and the reward metrics.
All text from episodes (turns, ids, modes, metric names) is HTML-escaped: model output is untrusted.

An episode is a mapping with:

- ``map_id`` (str), ``level`` (the task's group, e.g. a FrozenLake level), ``mode`` (str: the rollout mode, e.g.
  ``normal``/``prefix_buffer``);
- ``description``: the question as text (the task's ``describe(spec)``, e.g. a map's layout);
- ``map_image``: PIL image or uint8 array (``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]``);
- ``turns``: the assistant turn texts;
- ``feedback_images``: the image shown after each turn, aligned with ``turns`` (``None`` where there was
  none); a list one shorter than ``turns`` means every turn but the last got one, as in an episode;
- ``metrics``: name -> number (or short string), e.g. the reward's ``score_turns`` output.
"""

from __future__ import annotations

import base64
import html
import io
import numbers
import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from vrrl_jax.metrics import format_value

REQUIRED_KEYS = ("map_id", "level", "description", "map_image", "turns", "feedback_images", "metrics", "mode")
DEFAULT_MAX_EPISODES = 64

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1f2937; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #d1d5db; padding: 2px 8px; text-align: right; font-size: 13px; }
th { background: #f3f4f6; }
td.text { text-align: left; }
.card { border: 1px solid #9ca3af; border-radius: 6px; padding: 0.8em; margin: 1.2em 0; }
.card h2 { font-size: 16px; margin: 0 0 0.5em; }
.row { display: flex; gap: 1em; align-items: flex-start; flex-wrap: wrap; }
.turn { border-top: 1px dashed #d1d5db; padding: 0.5em 0; }
pre { white-space: pre-wrap; word-break: break-word; background: #f9fafb; padding: 6px; margin: 0;
      max-width: 60em; font-size: 13px; }
img { max-width: 280px; image-rendering: pixelated; border: 1px solid #e5e7eb; }
"""


def _esc(value: Any) -> str:
  return html.escape(str(value), quote=True)


def _to_pil(image: Any, what: str) -> Image.Image:
  if isinstance(image, Image.Image):
    return image
  if isinstance(image, np.ndarray):
    if image.dtype != np.uint8:
      raise ValueError(f"{what} must be a PIL image or a uint8 array, got dtype {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4)):
      return Image.fromarray(image)
    raise ValueError(f"{what} must be [H, W], [H, W, 3] or [H, W, 4], got shape {image.shape}")
  raise ValueError(f"{what} must be a PIL image or a uint8 array, got {type(image).__name__}")


def _img_tag(image: Image.Image, alt: str) -> str:
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  data = base64.b64encode(buffer.getvalue()).decode("ascii")
  return f'<img src="data:image/png;base64,{data}" alt="{_esc(alt)}">'


def _metric_text(value: Any) -> str:
  if isinstance(value, (bool, np.bool_)):
    return str(int(value))
  if isinstance(value, numbers.Integral):
    return format_value(int(value))
  if isinstance(value, numbers.Real):
    return format_value(float(value))
  return _esc(value)


def _check_episode(index: int, episode: Any) -> dict[str, Any]:
  """Validated copy: images as PIL, feedback aligned with turns."""
  if not isinstance(episode, Mapping):
    raise ValueError(f"episode {index} must be a mapping, got {type(episode).__name__}")
  missing = [k for k in REQUIRED_KEYS if k not in episode]
  if missing:
    raise ValueError(f"episode {index} is missing {missing} (needs {list(REQUIRED_KEYS)})")
  turns = episode["turns"]
  if isinstance(turns, str) or not isinstance(turns, Sequence) or not all(isinstance(t, str) for t in turns):
    raise ValueError(f"episode {index}: turns must be a list of strings")
  feedback = episode["feedback_images"]
  if isinstance(feedback, (Image.Image, np.ndarray)) or not isinstance(feedback, Sequence):
    raise ValueError(f"episode {index}: feedback_images must be a list (one entry per turn)")
  feedback = list(feedback)
  if len(feedback) == len(turns) - 1:
    feedback.append(None)
  if len(feedback) != len(turns):
    raise ValueError(
      f"episode {index}: {len(feedback)} feedback images for {len(turns)} turns (need one per "
      f"turn, or one per turn but the last)"
    )
  metrics = episode["metrics"]
  if not isinstance(metrics, Mapping):
    raise ValueError(f"episode {index}: metrics must be a mapping, got {type(metrics).__name__}")
  for key, value in metrics.items():
    if not isinstance(value, (numbers.Real, str, np.bool_)):
      raise ValueError(f"episode {index}: metric {key!r} must be a number or a string, got {type(value).__name__}")
  return {
    "map_id": episode["map_id"],
    "level": episode["level"],
    "mode": episode["mode"],
    "description": _checked_description(index, episode["description"]),
    "map_image": _to_pil(episode["map_image"], f"episode {index} map_image"),
    "turns": list(turns),
    "feedback_images": [
      None if im is None else _to_pil(im, f"episode {index} feedback image {t}") for t, im in enumerate(feedback)
    ],
    "metrics": dict(metrics),
  }


def _checked_description(index: int, description: Any) -> str:
  if not isinstance(description, str):
    raise ValueError(f"episode {index}: description must be a string, got {type(description).__name__}")
  return description


def _summary(episodes: list[dict[str, Any]], total: int) -> list[str]:
  keys: list[str] = []
  for ep in episodes:
    keys.extend(k for k in ep["metrics"] if k not in keys)
  head = "".join(f"<th>{_esc(k)}</th>" for k in ["#", "map_id", "level", "mode", "turns", *keys])
  out = [f"<p>Showing {len(episodes)} of {total} episodes.</p>", "<table>", f"<tr>{head}</tr>"]
  for i, ep in enumerate(episodes):
    cells = [
      f'<td><a href="#ep-{i}">{i}</a></td>',
      f'<td class="text">{_esc(ep["map_id"])}</td>',
      f"<td>{_esc(ep['level'])}</td>",
      f'<td class="text">{_esc(ep["mode"])}</td>',
      f"<td>{len(ep['turns'])}</td>",
    ]
    cells += [f"<td>{_metric_text(ep['metrics'][k]) if k in ep['metrics'] else ''}</td>" for k in keys]
    out.append(f"<tr>{''.join(cells)}</tr>")
  means = []
  for k in keys:
    values = [float(ep["metrics"][k]) for ep in episodes if isinstance(ep["metrics"].get(k), (numbers.Real, np.bool_))]
    means.append(f"<td>{format_value(float(np.mean(values))) if values else ''}</td>")
  mean_turns = format_value(float(np.mean([len(ep["turns"]) for ep in episodes]))) if episodes else ""
  out.append(f'<tr><th colspan="4">mean</th><td>{mean_turns}</td>{"".join(means)}</tr>')
  out.append("</table>")
  return out


def _card(i: int, ep: dict[str, Any]) -> list[str]:
  out = [
    f'<section class="card" id="ep-{i}">',
    f"<h2>#{i} {_esc(ep['map_id'])} (level {_esc(ep['level'])}, mode {_esc(ep['mode'])})</h2>",
    '<div class="row">',
    _img_tag(ep["map_image"], f"map {ep['map_id']}"),
    f"<pre>{_esc(ep['description'])}</pre>",
    "</div>",
  ]
  for t, (text, image) in enumerate(zip(ep["turns"], ep["feedback_images"])):
    out.append(f'<div class="turn"><div>turn {t + 1}</div><div class="row">')
    out.append(f"<pre>{_esc(text)}</pre>")
    if image is not None:
      out.append(_img_tag(image, f"feedback after turn {t + 1}"))
    out.append("</div></div>")
  rows = "".join(
    f'<tr><td class="text">{_esc(k)}</td><td>{_metric_text(v)}</td></tr>' for k, v in ep["metrics"].items()
  )
  out += [f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>", "</section>"]
  return out


def write_gallery(
  path_html: str | os.PathLike,
  episodes: Sequence[Mapping[str, Any]],
  *,
  max_episodes: int = DEFAULT_MAX_EPISODES,
  title: str = "VRRL rollouts",
  links: Sequence[tuple[str, str]] = (),
) -> int:
  """Writes the page for the first ``max_episodes`` episodes; returns how many it shows. ``links``: (text,
  relative URL) pairs listed under the title (e.g. the run's figure)."""
  if isinstance(max_episodes, bool) or not isinstance(max_episodes, numbers.Integral) or max_episodes < 1:
    raise ValueError(f"max_episodes must be an int >= 1, got {max_episodes!r}")
  if isinstance(episodes, Mapping) or not isinstance(episodes, Sequence):
    raise ValueError(f"episodes must be a list of episode mappings, got {type(episodes).__name__}")
  shown = [_check_episode(i, ep) for i, ep in enumerate(episodes[:max_episodes])]
  parts = [
    "<!DOCTYPE html>",
    '<html lang="en">',
    "<head>",
    '<meta charset="utf-8">',
    f"<title>{_esc(title)}</title>",
    f"<style>{_CSS}</style>",
    "</head>",
    "<body>",
    f"<h1>{_esc(title)}</h1>",
    *(f'<p><a href="{_esc(url)}">{_esc(text)}</a></p>' for text, url in links),
    *_summary(shown, len(episodes)),
  ]
  for i, ep in enumerate(shown):
    parts += _card(i, ep)
  parts += ["</body>", "</html>"]
  path = pathlib.Path(path_html)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
  os.replace(tmp, path)
  return len(shown)
