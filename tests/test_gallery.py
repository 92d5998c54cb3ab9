"""Rollout gallery: well-formed HTML, every turn's text escaped, the images embedded pixel-exact."""

import base64
import dataclasses
import html
import html.parser
import io

import numpy as np
import pytest
from PIL import Image

from vrrl_jax import gallery
from vrrl_jax.tasks import frozenlake
from vrrl_jax.tasks.frozenlake.reward import RewardConfig, score_turns
from vrrl_jax.tasks.frozenlake import transcripts

VOID = {"meta", "img", "br", "hr", "input", "link"}
SPEC = {"layout": ["SFH", "FHF", "FFG"], "start_pos": 0, "target_pos": 8}
EVIL = "<script>alert('x')</script>"


class _Page(html.parser.HTMLParser):
  """Collects tags, <img> sources and <pre> texts; asserts every element is closed in order."""

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.stack, self.tags, self.imgs, self.pres, self.cells = [], [], [], [], []
    self._pre = None

  def handle_starttag(self, tag, attrs):
    self.tags.append(tag)
    if tag == "img":
      self.imgs.append(dict(attrs)["src"])
    elif tag not in VOID:
      self.stack.append(tag)
    if tag == "pre":
      self._pre = []

  def handle_endtag(self, tag):
    assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
    self.stack.pop()
    if tag == "pre":
      self.pres.append("".join(self._pre))
      self._pre = None

  def handle_data(self, data):
    if self._pre is not None:
      self._pre.append(data)


def _parse(path):
  page = _Page()
  page.feed(path.read_text(encoding="utf-8"))
  page.close()
  assert page.stack == []
  return page


def _decode(src):
  prefix = "data:image/png;base64,"
  assert src.startswith(prefix)
  return np.asarray(Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :]))).convert("RGB"))


def _episode(seed, kinds, map_id, mode="normal"):
  t = transcripts.make_transcript(SPEC, np.random.default_rng(seed), wrong_kinds=kinds)
  return {
    "map_id": map_id,
    "level": 3,
    "description": frozenlake.describe(SPEC),
    "map_image": t.map_image,
    "turns": list(t.turns),
    "feedback_images": list(t.feedback_images),
    "mode": mode,
    "metrics": score_turns(list(t.turns), SPEC, **dataclasses.asdict(RewardConfig.released())),
  }


def _evil_episode():
  """A format-error episode whose texts try to inject markup; images as uint8 arrays."""
  turns = ["<ANSWER>right right</ANSWER> " + EVIL, '<THINK>a & b "quoted" </pre></THINK>' + EVIL]
  feedback = np.asarray(
    transcripts.make_transcript(SPEC, np.random.default_rng(0), wrong_kinds=["hole"]).feedback_images[0]
  )
  return {
    "map_id": '<img src=x onerror="alert(1)">',
    "level": 3,
    "description": frozenlake.describe(SPEC),
    "map_image": np.zeros((30, 40, 3), np.uint8) + 200,
    "turns": turns,
    "feedback_images": [feedback, None],
    "mode": '"><b>mode</b>',
    "metrics": {"overall": 0.0, "<i>key": float("nan"), "reason": "format_error & <b>"},
  }


def test_gallery_shows_every_turn_and_image(tmp_path):
  episodes = [_episode(1, (), "m0"), _episode(2, ["off_grid", "short"], "m1", "prefix_buffer"), _evil_episode()]
  path = tmp_path / "gallery.html"
  assert gallery.write_gallery(path, episodes) == 3
  page = _parse(path)
  text = path.read_text(encoding="utf-8")

  # One map image per card, then one image per turn that had feedback, in page order.
  expected = []
  for ep in episodes:
    expected.append(np.asarray(ep["map_image"]))
    expected += [np.asarray(im) for im in ep["feedback_images"] if im is not None]
  # correct-first: 2 turns, 1 feedback; two wrong routes: 4 turns, 3 feedback; evil: 1 feedback.
  assert len(page.imgs) == len(expected) == (1 + 1) + (1 + 3) + (1 + 1)
  for src, image in zip(page.imgs, expected):
    np.testing.assert_array_equal(_decode(src), image[..., :3])

  for ep in episodes:
    for turn in ep["turns"]:
      assert html.escape(turn, quote=True) in text
      assert turn in page.pres  # the browser shows the original text
  # The task's description of each question is on its card: the FrozenLake layout, start, goal, shortest route.
  assert "SFH\nFHF\nFFG\nstart 0, goal 8, shortest route 4" in page.pres
  # Injection attempts stay text.
  assert "script" not in page.tags and "<script>" not in text and "<b>" not in text
  assert page.tags.count("img") == len(expected)
  assert html.escape(EVIL) in text
  assert page.tags.count("section") == 3
  # The summary table links to every card.
  assert all(f'href="#ep-{i}"' in text and f'id="ep-{i}"' in text for i in range(3))
  assert "Showing 3 of 3 episodes." in text


def test_cap_on_episodes(tmp_path):
  episodes = [_episode(seed, ["too_long"], f"map{seed}") for seed in range(5)]
  path = tmp_path / "sub" / "g.html"
  assert gallery.write_gallery(path, episodes, max_episodes=2) == 2
  page = _parse(path)
  text = path.read_text(encoding="utf-8")
  assert page.tags.count("section") == 2
  assert len(page.imgs) == 2 * (1 + 2)  # map + two feedback images (the wrong route and the fix)
  assert "map0" in text and "map1" in text and "map2" not in text
  assert "Showing 2 of 5 episodes." in text


def test_links_under_the_title_are_escaped(tmp_path):
  path = tmp_path / "g.html"
  gallery.write_gallery(path, [_episode(0, ["too_long"], "map0")], links=(("reward <&> rate", "../run.png"),))
  assert '<p><a href="../run.png">reward &lt;&amp;&gt; rate</a></p>' in path.read_text(encoding="utf-8")


def test_summary_mean_row(tmp_path):
  episodes = [_episode(1, (), "a"), _episode(3, ["hole"], "b")]
  path = tmp_path / "g.html"
  gallery.write_gallery(path, episodes)
  text = path.read_text(encoding="utf-8")
  mean_row = next(line for line in text.splitlines() if line.startswith('<tr><th colspan="4">mean'))
  cells = mean_row.removesuffix("</tr>").replace("</td>", "").split("<td>")[1:]
  keys = list(episodes[0]["metrics"])
  # turns: (2 + 3) / 2; each metric: the plain mean of the two episodes' values.
  assert float(cells[0]) == 2.5
  for key, cell in zip(keys, cells[1:]):
    want = (episodes[0]["metrics"][key] + episodes[1]["metrics"][key]) / 2
    assert float(cell) == pytest.approx(want, abs=5e-5), key


@pytest.mark.parametrize(
  "change, match",
  [
    (lambda ep: ep.pop("turns"), "missing"),
    (lambda ep: ep.update(feedback_images=[]), "feedback images"),
    (lambda ep: ep.update(map_image=np.zeros((4, 4, 3), np.float32)), "uint8"),
    (lambda ep: ep.update(map_image=np.zeros((4, 4, 2), np.uint8)), "shape"),
    (lambda ep: ep.update(turns="<ANSWER>up</ANSWER>"), "list of strings"),
    (lambda ep: ep.update(metrics={"x": [1, 2]}), "metric 'x'"),
    (lambda ep: ep.update(description=None), "description must be a string"),
  ],
)
def test_bad_episodes_raise(tmp_path, change, match):
  ep = _episode(1, ["hole"], "m")
  change(ep)
  with pytest.raises(ValueError, match=match):
    gallery.write_gallery(tmp_path / "g.html", [ep])
  assert not (tmp_path / "g.html").exists()
  with pytest.raises(ValueError, match="max_episodes"):
    gallery.write_gallery(tmp_path / "g.html", [], max_episodes=0)


def test_feedback_aligned_with_every_turn(tmp_path):
  """Feedback lists one shorter than turns (as an episode has) or as long, with None where none was shown."""
  ep = _episode(2, ["short"], "m")  # 3 turns, 2 feedback images
  images = ep["feedback_images"]
  for feedback, n_shown in ((images, 2), (images + [None], 2), ([images[0], None], 1), ([None, images[1], None], 1)):
    ep["feedback_images"] = feedback
    path = tmp_path / "g.html"
    gallery.write_gallery(path, [ep])
    srcs = _parse(path).imgs
    assert len(srcs) == 1 + n_shown
    shown = [im for im in feedback if im is not None]
    for src, image in zip(srcs[1:], shown):
      np.testing.assert_array_equal(_decode(src), np.asarray(image))
