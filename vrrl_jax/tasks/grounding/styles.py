"""Render styles of the grounding scenes: in-distribution (train and ID eval) and out-of-distribution (eval only).

A style decides the look (palette, lines, stripes, value labels, bold headers, font size) and how much is in a scene
(table rows and columns, number of bars). The OOD styles differ from every ID style in palette and at least one
other property (a dark theme, denser tables and charts, a larger font with bold headers on a saturated
background), so an eval on them measures transfer to a look never trained on. Only Pillow's built-in font exists
here (``ImageFont.load_default(size=...)``, Pillow >= 10.1), so "other fonts" is approximated by size and faux
bold; see ``docs/gallery/grounding``.

Bars are drawn in exact colours (no anti-aliasing) and every bar colour differs from the background, the grid
and the text colour, so tests can locate a bar by its colour. Text is anti-aliased.
"""

from __future__ import annotations

import dataclasses

RGB = tuple[int, int, int]
MIN_FONT_PX = 10  # smallest font any scene uses: below this Pillow's default font stops being legible


@dataclasses.dataclass(frozen=True)
class Style:
  """Everything that decides how a scene looks and how dense it is. ``*_range`` are inclusive (lo, hi).

  ``max_label_chars``: bar labels are drawn only from names at most this long.
  ``font_frac``: preferred font size as a fraction of the image's shorter side (scenes shrink it, never below
  ``MIN_FONT_PX``, until every text fits its cell or slot). ``line_frac``: line width as a fraction of the
  shorter side (at least 1 px).
  """

  name: str
  ood: bool
  background: RGB
  text: RGB
  grid: RGB  # table rules and chart gridlines
  axis: RGB
  header_fill: RGB  # table header row and row-label column
  stripe_fill: RGB | None  # every other data row of a table, or None
  bar_colors: tuple[RGB, ...]  # bars take these in turn
  bar_outline: RGB | None
  gridlines: bool  # horizontal (vertical for hbars) gridlines in charts
  value_labels: bool  # the value written at the end of each bar
  bold_headers: bool  # headers and bar labels in faux bold (drawn twice, 1 px apart)
  font_frac: float
  line_frac: float
  table_rows: tuple[int, int]
  table_cols: tuple[int, int]
  bar_count: tuple[int, int]
  max_label_chars: int = 5  # bar labels are drawn from the names this short (dense charts need short ones)

  def __post_init__(self):
    for name in ("table_rows", "table_cols", "bar_count"):
      lo, hi = getattr(self, name)
      if not 2 <= lo <= hi <= 9:
        raise ValueError(f"style {self.name!r}: {name} must satisfy 2 <= lo <= hi <= 9, got {(lo, hi)}")
    if not self.bar_colors:
      raise ValueError(f"style {self.name!r}: bar_colors is empty")
    for color in self.bar_colors:
      if color in (self.background, self.text, self.grid, self.axis):
        raise ValueError(f"style {self.name!r}: bar colour {color} equals the background, text, grid or axis colour")
    if not 0.0 < self.font_frac < 0.2 or not 0.0 < self.line_frac < 0.05:
      raise ValueError(f"style {self.name!r}: font_frac/line_frac out of range ({self.font_frac}, {self.line_frac})")


PLAIN = Style(
  name="plain",
  ood=False,
  background=(255, 255, 255),
  text=(20, 20, 20),
  grid=(170, 170, 170),
  axis=(40, 40, 40),
  header_fill=(226, 232, 240),
  stripe_fill=None,
  bar_colors=((59, 110, 200),),
  bar_outline=None,
  gridlines=True,
  value_labels=False,
  bold_headers=False,
  font_frac=0.048,
  line_frac=0.004,
  table_rows=(3, 5),
  table_cols=(2, 4),
  bar_count=(4, 6),
)

STRIPED = Style(
  name="striped",
  ood=False,
  background=(255, 255, 255),
  text=(33, 37, 41),
  grid=(200, 200, 200),
  axis=(60, 60, 60),
  header_fill=(255, 226, 196),
  stripe_fill=(245, 245, 245),
  bar_colors=((230, 126, 34),),
  bar_outline=(120, 60, 10),
  gridlines=False,
  value_labels=True,
  bold_headers=True,
  font_frac=0.046,
  line_frac=0.003,
  table_rows=(3, 5),
  table_cols=(2, 4),
  bar_count=(3, 6),
)

SOFT = Style(
  name="soft",
  ood=False,
  background=(250, 246, 236),
  text=(50, 50, 50),
  grid=(210, 200, 180),
  axis=(90, 80, 70),
  header_fill=(214, 234, 228),
  stripe_fill=None,
  bar_colors=((42, 157, 143), (233, 196, 106), (231, 111, 81), (38, 70, 83)),
  bar_outline=None,
  gridlines=True,
  value_labels=False,
  bold_headers=False,
  font_frac=0.05,
  line_frac=0.004,
  table_rows=(3, 4),
  table_cols=(2, 3),
  bar_count=(4, 5),
)

DARK = Style(
  name="dark",
  ood=True,
  background=(24, 26, 32),
  text=(236, 236, 236),
  grid=(70, 74, 84),
  axis=(200, 200, 200),
  header_fill=(48, 54, 70),
  stripe_fill=(34, 37, 45),
  bar_colors=((0, 200, 255), (255, 92, 138)),
  bar_outline=None,
  gridlines=True,
  value_labels=True,
  bold_headers=False,
  font_frac=0.046,
  line_frac=0.004,
  table_rows=(3, 5),
  table_cols=(2, 4),
  bar_count=(4, 6),
)

DENSE = Style(
  name="dense",
  ood=True,
  background=(255, 255, 255),
  text=(10, 10, 60),
  grid=(150, 150, 190),
  axis=(10, 10, 60),
  header_fill=(230, 220, 250),
  stripe_fill=(246, 244, 252),
  bar_colors=((120, 60, 180), (180, 140, 220)),
  bar_outline=(60, 30, 90),
  gridlines=True,
  value_labels=False,
  bold_headers=False,
  font_frac=0.04,
  line_frac=0.003,
  table_rows=(6, 7),
  table_cols=(4, 5),
  bar_count=(6, 7),
  max_label_chars=4,
)

CONTRAST = Style(
  name="contrast",
  ood=True,
  background=(255, 244, 160),
  text=(0, 0, 0),
  grid=(0, 0, 0),
  axis=(0, 0, 0),
  header_fill=(255, 200, 0),
  stripe_fill=None,
  bar_colors=((200, 0, 0), (0, 120, 0)),
  bar_outline=(0, 0, 0),
  gridlines=False,
  value_labels=True,
  bold_headers=True,
  font_frac=0.058,
  line_frac=0.008,
  table_rows=(2, 4),
  table_cols=(2, 3),
  bar_count=(3, 5),
)

STYLES: dict[str, Style] = {s.name: s for s in (PLAIN, STRIPED, SOFT, DARK, DENSE, CONTRAST)}
ID_STYLES = tuple(name for name, s in STYLES.items() if not s.ood)
OOD_STYLES = tuple(name for name, s in STYLES.items() if s.ood)


def get_style(name: str) -> Style:
  if not isinstance(name, str) or name not in STYLES:
    raise ValueError(f"unknown grounding style {name!r}; choose one of {sorted(STYLES)}")
  return STYLES[name]
