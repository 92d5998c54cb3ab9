"""Mock GUI screens for ViGoRL's GUI grounding (a ScreenSpot substitute, GROUNDING_SPEC section 4).

One application window fills the image: a title bar, a menu bar, a toolbar of labelled buttons, a sidebar list, and
a main area with tabs, form fields with their labels, checkboxes and a dialog panel (or a footer) of buttons. The
question names one clickable element by its label and type ("Click the 'Export' button."); the answer is a point
inside that element's box.

The logical layout comes from the seed alone, in integer thousandths of the canvas (``milli``), so the drawn
screen at any size and in any theme shows the same elements in the same relative places, and ``Scene.content``
(which lists them) is equal across themes and sizes: its hash keeps train and eval disjoint. Every label on a
screen is distinct, so the question is unambiguous. Label widths are planned with Pillow's built-in font measured
at 17 px on a 504 px canvas; at render time one font size per screen is used, the theme's preferred size shrunk
until every text fits its slot, never below ``MIN_FONT_PX`` (else ValueError: a caller skips that seed).

Sizes: ``"small"`` 504 x 504 is shown to a tiny CPU model at about 252 x 252, so labels are drawn at ~16 px (8 px
after the downscale: zooming helps); ``"large"`` keeps a desktop-like 16 px font at 1344 x 840. Clickable elements
are at least 28 x 20 px for any canvas whose sides are at least 420 px.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import numbers

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vrrl_jax.tasks.vigorl.scene import POINT, Box, Element, Scene

KIND = "gui"
QUESTIONS = ("click",)
SIZES = {
  "small": {"id": ((504, 504),), "ood": ((560, 420), (420, 560))},
  "large": {"id": ((1344, 840),), "ood": ((1120, 840), (840, 1120))},
}
PATCH_MULTIPLE = 28
MIN_SIDE, MAX_SIDE = 280, 2240
MIN_FONT_PX = 10  # below this Pillow's default font stops being legible
MAX_FONT_PX = 16  # desktop-like text even on large canvases
FONT_FRAC = 0.034  # preferred font size as a fraction of the shorter side (17 px at 504, capped)
REF_SIDE, REF_FONT_PX = 504, 17  # label widths are planned at this font on this canvas (slack for 16 px)

RGB = tuple[int, int, int]
MBox = tuple[int, int, int, int]  # (x1, y1, x2, y2) in thousandths of the canvas, x2/y2 exclusive

# ----------------------------------------------------------------------------------------------------------------
# Vocabulary. Labels are drawn without replacement across all pools, so every label on a screen is distinct.

MENUS = ("File", "Edit", "View", "Insert", "Format", "Tools", "Window", "Help")  # in their usual order
TOOLBAR = (
  "New", "Open", "Save", "Print", "Undo", "Redo", "Cut", "Copy", "Paste", "Refresh", "Search", "Share", "Export",
  "Import", "Upload", "Download", "Sort", "Filter", "Zoom in", "Zoom out",
)  # fmt: skip
SIDEBAR = (
  "Home", "Inbox", "Drafts", "Sent", "Archive", "Trash", "Documents", "Downloads", "Music", "Photos", "Projects",
  "Reports", "Contacts", "Calendar", "Library", "Favorites", "Recent", "Shared", "Settings", "Help",
)  # fmt: skip
TABS = (
  "General", "Advanced", "Privacy", "Display", "Network", "Account", "Security", "Sharing", "Layout", "Details",
  "Updates", "Profile", "Settings", "Sound",
)  # fmt: skip
FIELDS = (
  "Name", "Email", "Password", "Phone", "Address", "City", "Username", "Company", "Website", "Country", "Subject",
  "Search",
)  # fmt: skip
CHECKBOXES = (
  "Remember me", "Send updates", "Auto save", "Show hidden", "Notify me", "Sync files", "Keep signed in",
  "Dark mode", "Enable alerts", "Share usage", "Read only", "Private",
)  # fmt: skip
DIALOG = (
  "OK", "Cancel", "Apply", "Export", "Delete", "Submit", "Reset", "Close", "Next", "Back", "Save", "Share", "Print",
  "Retry", "Done", "Send",
)  # fmt: skip
PRIMARY = ("OK", "Submit", "Export", "Apply", "Save", "Send", "Done", "Next", "Retry", "Delete", "Share", "Print")
LABELS = tuple(sorted(set(MENUS + TOOLBAR + SIDEBAR + TABS + FIELDS + CHECKBOXES + DIALOG)))

# Decoration: text that is drawn but is not a clickable element; none of it equals a label.
APPS = ("Notes", "Mailbox", "Ledger", "Planner", "Studio", "Atlas", "Reader")
DOCUMENTS = ("Untitled", "draft 2", "budget", "q3 summary", "trip plan", "invoice 42", "notes")
SIDEBAR_HEADINGS = ("FOLDERS", "PLACES", "BROWSE", "SHORTCUTS")
FORM_HEADINGS = ("Your profile", "Contact info", "Sign in", "New account", "Billing info", "Preferences")
DIALOG_TITLES = ("Confirm", "Unsaved changes", "Almost done", "Before you go", "Please confirm", "Finish up")
MESSAGES = (
  "Do you want to continue?", "Changes apply to all items.", "This cannot be undone.", "Three items selected.",
  "Your changes are not kept yet.",
)  # fmt: skip
STATUS = ("Ready", "Connected", "Offline", "12 items", "Line 4, Col 18", "Synced just now")
FIELD_VALUES = {
  "Name": ("Ana Lima", "Tom Berg"), "Email": ("ana@mail.org", "tom@site.io"), "Password": ("********",),
  "Phone": ("555-0142",), "Address": ("12 Oak St",), "City": ("Lisbon", "Oslo"), "Username": ("ana_l", "tberg"),
  "Company": ("Acme Ltd",), "Website": ("acme.org",), "Country": ("Portugal", "Norway"), "Subject": ("Hello",),
  "Search": ("invoices",),
}  # fmt: skip
DECORATION = APPS + DOCUMENTS + SIDEBAR_HEADINGS + FORM_HEADINGS + DIALOG_TITLES + MESSAGES + STATUS

# Element types and how a question or a description names them.
MENU, BUTTON, ITEM, TAB, FIELD, CHECKBOX = "menu", "button", "item", "tab", "field", "checkbox"
NOUNS = {MENU: "menu", BUTTON: "button", ITEM: "sidebar item", TAB: "tab", FIELD: "field", CHECKBOX: "checkbox"}

# Fixed bands of the window, in thousandths of the height.
TITLE_Y, MENU_Y, MENU_ITEM_Y = (0, 58), (58, 114), (61, 111)
TOOLBAR_Y, TOOL_BUTTON_Y = (114, 194), (124, 184)
BODY_Y, STATUS_Y = (194, 946), (946, 1000)
TAB_H, FIELD_H, LABEL_H, CHECK_H, BUTTON_H, HEADING_H, ITEM_H = 62, 62, 44, 52, 62, 50, 60
PANEL_HEADER_H, MESSAGE_H = 52, 46
CHECK_RESERVE = 78  # thousandths of the width reserved in a checkbox's box besides its label text


# ----------------------------------------------------------------------------------------------------------------
# Themes: the look only; they never move or resize anything.


@dataclasses.dataclass(frozen=True)
class Theme:
  """How a screen looks. ``radius``: corner radius as a fraction of an element's height (0 square, 0.5 pill);
  ``bevel``: 3-D raised buttons and sunken fields; ``controls``: the window buttons ("glyphs" on the right,
  "boxes" raised on the right, "circles" on the left with a centred title)."""

  name: str
  ood: bool
  window: RGB
  text: RGB
  muted: RGB
  title_bg: tuple[RGB, RGB]  # top and bottom of a vertical gradient (equal: flat)
  title_text: RGB
  menu_bg: RGB
  menu_text: RGB
  toolbar_bg: RGB
  button: tuple[RGB, RGB]
  button_text: RGB
  button_border: RGB | None
  primary: RGB
  primary_text: RGB
  sidebar_bg: RGB
  item_fill: RGB | None  # None: items are drawn on the sidebar background
  selected_fill: RGB
  selected_text: RGB
  tab_fill: RGB
  tab_active: RGB
  tab_text: RGB
  accent: RGB  # active tab marker, check marks
  field_fill: RGB
  field_border: RGB
  check_fill: RGB
  check_border: RGB
  line: RGB  # separators and panel outlines
  panel_fill: RGB
  panel_header: RGB
  status_bg: RGB
  status_text: RGB
  radius: float
  bevel: bool
  shadow: RGB | None
  controls: str
  font_scale: float = 1.0
  pad_em: float = 0.3  # least horizontal padding around a label, in font sizes


FLAT = Theme(
  name="flat",
  ood=False,
  window=(247, 248, 250),
  text=(31, 41, 55),
  muted=(107, 114, 128),
  title_bg=((236, 238, 241), (236, 238, 241)),
  title_text=(31, 41, 55),
  menu_bg=(255, 255, 255),
  menu_text=(31, 41, 55),
  toolbar_bg=(241, 243, 246),
  button=((226, 229, 234), (226, 229, 234)),
  button_text=(31, 41, 55),
  button_border=None,
  primary=(37, 99, 235),
  primary_text=(255, 255, 255),
  sidebar_bg=(236, 239, 243),
  item_fill=None,
  selected_fill=(214, 228, 252),
  selected_text=(29, 78, 216),
  tab_fill=(233, 236, 240),
  tab_active=(255, 255, 255),
  tab_text=(55, 65, 81),
  accent=(37, 99, 235),
  field_fill=(255, 255, 255),
  field_border=(190, 196, 205),
  check_fill=(255, 255, 255),
  check_border=(120, 128, 140),
  line=(209, 213, 219),
  panel_fill=(255, 255, 255),
  panel_header=(243, 244, 246),
  status_bg=(236, 238, 241),
  status_text=(75, 85, 99),
  radius=0.12,
  bevel=False,
  shadow=None,
  controls="glyphs",
)

CLASSIC = Theme(
  name="classic",
  ood=False,
  window=(212, 208, 200),
  text=(0, 0, 0),
  muted=(64, 64, 64),
  title_bg=((10, 36, 106), (90, 126, 204)),
  title_text=(255, 255, 255),
  menu_bg=(224, 221, 214),
  menu_text=(0, 0, 0),
  toolbar_bg=(200, 196, 188),
  button=((250, 250, 248), (206, 202, 194)),
  button_text=(0, 0, 0),
  button_border=(64, 64, 64),
  primary=(226, 230, 242),
  primary_text=(0, 0, 0),
  sidebar_bg=(255, 255, 255),
  item_fill=None,
  selected_fill=(10, 36, 106),
  selected_text=(255, 255, 255),
  tab_fill=(196, 192, 184),
  tab_active=(232, 229, 222),
  tab_text=(0, 0, 0),
  accent=(0, 0, 0),
  field_fill=(255, 255, 255),
  field_border=(128, 128, 128),
  check_fill=(255, 255, 255),
  check_border=(64, 64, 64),
  line=(128, 128, 128),
  panel_fill=(224, 221, 214),
  panel_header=(10, 36, 106),
  status_bg=(200, 196, 188),
  status_text=(0, 0, 0),
  radius=0.0,
  bevel=True,
  shadow=(120, 118, 112),
  controls="boxes",
)

MATERIAL = Theme(
  name="material",
  ood=False,
  window=(250, 250, 250),
  text=(33, 33, 33),
  muted=(97, 97, 97),
  title_bg=((48, 63, 159), (48, 63, 159)),
  title_text=(255, 255, 255),
  menu_bg=(63, 81, 181),
  menu_text=(255, 255, 255),
  toolbar_bg=(255, 255, 255),
  button=((232, 234, 246), (232, 234, 246)),
  button_text=(48, 63, 159),
  button_border=None,
  primary=(233, 30, 99),
  primary_text=(255, 255, 255),
  sidebar_bg=(255, 255, 255),
  item_fill=None,
  selected_fill=(232, 234, 246),
  selected_text=(48, 63, 159),
  tab_fill=(238, 238, 238),
  tab_active=(255, 255, 255),
  tab_text=(66, 66, 66),
  accent=(233, 30, 99),
  field_fill=(238, 238, 238),
  field_border=(117, 117, 117),
  check_fill=(255, 255, 255),
  check_border=(117, 117, 117),
  line=(224, 224, 224),
  panel_fill=(255, 255, 255),
  panel_header=(255, 255, 255),
  status_bg=(238, 238, 238),
  status_text=(66, 66, 66),
  radius=0.08,
  bevel=False,
  shadow=(210, 210, 210),
  controls="glyphs",
)

DARK = Theme(
  name="dark",
  ood=True,
  window=(30, 30, 32),
  text=(230, 230, 230),
  muted=(160, 160, 165),
  title_bg=((44, 44, 47), (44, 44, 47)),
  title_text=(220, 220, 220),
  menu_bg=(37, 37, 40),
  menu_text=(220, 220, 220),
  toolbar_bg=(40, 40, 43),
  button=((64, 64, 69), (64, 64, 69)),
  button_text=(235, 235, 235),
  button_border=None,
  primary=(10, 132, 255),
  primary_text=(255, 255, 255),
  sidebar_bg=(37, 37, 40),
  item_fill=None,
  selected_fill=(58, 58, 64),
  selected_text=(255, 255, 255),
  tab_fill=(44, 44, 47),
  tab_active=(62, 62, 68),
  tab_text=(220, 220, 220),
  accent=(10, 132, 255),
  field_fill=(48, 48, 52),
  field_border=(96, 96, 102),
  check_fill=(48, 48, 52),
  check_border=(150, 150, 155),
  line=(70, 70, 76),
  panel_fill=(40, 40, 44),
  panel_header=(50, 50, 55),
  status_bg=(0, 122, 204),
  status_text=(255, 255, 255),
  radius=0.14,
  bevel=False,
  shadow=(14, 14, 16),
  controls="glyphs",
)

MOBILE = Theme(
  name="mobile",
  ood=True,
  window=(242, 242, 247),
  text=(28, 28, 30),
  muted=(110, 110, 115),
  title_bg=((255, 255, 255), (255, 255, 255)),
  title_text=(28, 28, 30),
  menu_bg=(250, 250, 252),
  menu_text=(0, 122, 255),
  toolbar_bg=(255, 255, 255),
  button=((255, 149, 0), (255, 149, 0)),
  button_text=(255, 255, 255),
  button_border=None,
  primary=(52, 168, 83),
  primary_text=(255, 255, 255),
  sidebar_bg=(255, 255, 255),
  item_fill=(246, 246, 250),
  selected_fill=(255, 236, 209),
  selected_text=(191, 96, 0),
  tab_fill=(229, 229, 234),
  tab_active=(255, 255, 255),
  tab_text=(28, 28, 30),
  accent=(255, 149, 0),
  field_fill=(255, 255, 255),
  field_border=(199, 199, 204),
  check_fill=(255, 255, 255),
  check_border=(174, 174, 178),
  line=(216, 216, 220),
  panel_fill=(255, 255, 255),
  panel_header=(255, 255, 255),
  status_bg=(250, 250, 252),
  status_text=(110, 110, 115),
  radius=0.5,
  bevel=False,
  shadow=(222, 222, 228),
  controls="circles",
  font_scale=1.06,
  pad_em=0.55,
)

THEMES: dict[str, Theme] = {t.name: t for t in (FLAT, CLASSIC, MATERIAL, DARK, MOBILE)}
ID_STYLES: tuple[str, ...] = tuple(name for name, t in THEMES.items() if not t.ood)
OOD_STYLES: tuple[str, ...] = tuple(name for name, t in THEMES.items() if t.ood)


# ----------------------------------------------------------------------------------------------------------------
# Logical layout (seed only).


@dataclasses.dataclass(frozen=True)
class _Item:
  """A clickable element. ``on``: selected item, active tab, checked box or primary button; ``value``: the text
  already typed in a field (decoration)."""

  type: str
  label: str
  box: MBox
  on: bool = False
  value: str = ""


@dataclasses.dataclass(frozen=True)
class _Text:
  """A text that is not a clickable element's label. ``role`` picks its colour; ``align`` "l" or "c"."""

  role: str
  text: str
  box: MBox
  align: str = "l"


@dataclasses.dataclass(frozen=True)
class _Layout:
  items: tuple[_Item, ...]
  texts: tuple[_Text, ...]
  target: int
  question: str
  sidebar: MBox
  main: MBox
  tab_line: int | None  # y of the line under the tabs
  panel: MBox | None
  footer_line: int | None  # y of the line above footer buttons
  separators: tuple[int, ...]  # x of toolbar separators
  content: str


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
  return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=8192)
def _text_wh(text: str, size: int) -> tuple[int, int]:
  left, top, right, bottom = _font(size).getbbox(text)
  return right - left, bottom - top


@functools.lru_cache(maxsize=1024)
def _ref_w(text: str) -> int:
  """A text's width in thousandths of the canvas width at the planning font (rounded up)."""
  return -(-_text_wh(text, REF_FONT_PX)[0] * 1000 // REF_SIDE)


def _pick(rng: np.random.Generator, pool: tuple[str, ...], n: int, used: set[str], keep_order=False) -> list[str]:
  free = [w for w in pool if w not in used]
  idx = rng.choice(len(free), size=min(n, len(free)), replace=False)
  chosen = [free[i] for i in (sorted(idx) if keep_order else idx)]
  used.update(chosen)
  return chosen


def _row(labels, x0: int, x1: int, y: tuple[int, int], min_w: int, pad: int, gap: int) -> list[MBox]:
  """Boxes for labels laid left to right from x0; labels that would pass x1 are left out."""
  boxes, x = [], x0
  for label in labels:
    w = max(min_w, _ref_w(label) + 2 * pad)
    if x + w > x1:
      break
    boxes.append((x, y[0], x + w, y[1]))
    x += w + gap
  return boxes


def _int(rng: np.random.Generator, lo: int, hi: int) -> int:
  """Uniform in [lo, hi] inclusive (hi < lo gives lo)."""
  return int(rng.integers(lo, max(lo, hi) + 1))


@functools.lru_cache(maxsize=1024)
def _layout(seed: int) -> _Layout:
  rng = np.random.default_rng(seed)
  used: set[str] = set()
  items: list[_Item] = []
  texts: list[_Text] = []

  title = f"{DOCUMENTS[_int(rng, 0, len(DOCUMENTS) - 1)]} - {APPS[_int(rng, 0, len(APPS) - 1)]}"
  texts.append(_Text("title", title, (20, TITLE_Y[0], 640, TITLE_Y[1])))

  menus = ["File"] + _pick(rng, MENUS[1:], _int(rng, 3, 5), used | {"File"}, keep_order=True)
  used.update(menus)
  for label, box in zip(menus, _row(menus, 10, 990, MENU_ITEM_Y, 75, 18, 4)):
    items.append(_Item(MENU, label, box))

  tools = _pick(rng, TOOLBAR, _int(rng, 3, 6), used)
  sep_after = _int(rng, 1, len(tools) - 1) if rng.random() < 0.6 else None
  boxes, separators, x = [], [], 16
  for i, label in enumerate(tools):
    w = max(100, _ref_w(label) + 44)
    if x + w > 984:
      break
    boxes.append((x, TOOL_BUTTON_Y[0], x + w, TOOL_BUTTON_Y[1]))
    x += w + 14
    if i + 1 == sep_after:
      separators.append(x + 6)
      x += 26
  separators = [x for x in separators if x < boxes[-1][0]]  # only between buttons that fit
  items.extend(_Item(BUTTON, label, box) for label, box in zip(tools, boxes))

  # Sidebar: a list on the left (usually) or the right.
  side_labels = _pick(rng, SIDEBAR, _int(rng, 4, 8), used)
  heading = SIDEBAR_HEADINGS[_int(rng, 0, len(SIDEBAR_HEADINGS) - 1)] if rng.random() < 0.5 else ""
  sw = max(_int(rng, 220, 300), max(_ref_w(s) for s in side_labels) + 84, _ref_w(heading) + 60)
  left = bool(rng.random() < 0.7)
  sx0, sx1 = (0, sw) if left else (1000 - sw, 1000)
  y = BODY_Y[0] + 16
  if heading:
    texts.append(_Text("muted", heading, (sx0 + 24, y, sx1 - 12, y + HEADING_H)))
    y += HEADING_H + 6
  side_boxes = []
  for _ in side_labels:
    if y + ITEM_H > BODY_Y[1] - 16:
      break
    side_boxes.append((sx0 + 12, y, sx1 - 12, y + ITEM_H))
    y += ITEM_H + 10
  selected = _int(rng, 0, len(side_boxes) - 1)
  for i, (label, box) in enumerate(zip(side_labels, side_boxes)):
    items.append(_Item(ITEM, label, box, on=i == selected))

  if left:
    mx0, mx1 = sw + _int(rng, 24, 60), 1000 - _int(rng, 24, 40)
  else:
    mx0, mx1 = _int(rng, 24, 40), 1000 - sw - _int(rng, 24, 60)
  mw = mx1 - mx0

  # What the main area holds, trimmed below to the height available.
  has_tabs = bool(rng.random() < 0.75)
  tab_labels = _pick(rng, TABS, _int(rng, 2, 5), used) if has_tabs else []
  tab_boxes = _row(tab_labels, mx0, mx1, (0, TAB_H), 110, 26, 6)
  tab_labels = tab_labels[: len(tab_boxes)]
  has_heading = bool(rng.random() < 0.6)
  form_heading = FORM_HEADINGS[_int(rng, 0, len(FORM_HEADINGS) - 1)]
  field_labels = _pick(rng, FIELDS, _int(rng, 2, 4), used)
  labcol = max(_ref_w(f) for f in field_labels) + 40
  labels_left = bool(rng.random() < 0.6) and mw - labcol >= 300
  check_labels = _pick(rng, CHECKBOXES, _int(rng, 1, 3), used)
  check_in_row = bool(rng.random() < 0.4)
  dialog_labels = _pick(rng, DIALOG, _int(rng, 2, 3), used)
  has_panel = bool(rng.random() < 0.7)
  panel_bottom = bool(rng.random() < 0.5)

  def check_widths():
    return [_ref_w(c) + CHECK_RESERVE for c in check_labels]

  def height() -> int:
    h = (TAB_H + 28) * bool(tab_labels) + (HEADING_H + 12) * has_heading
    h += len(field_labels) * ((FIELD_H + 22) if labels_left else (LABEL_H + FIELD_H + 26))
    rowable = check_in_row and sum(check_widths()) + 30 * (len(check_labels) - 1) <= mw
    h += (CHECK_H + 12) * (1 if rowable else len(check_labels)) + 10
    h += (PANEL_HEADER_H + MESSAGE_H + BUTTON_H + 38 + 20) if has_panel else (BUTTON_H + 40)
    return h

  budget = BODY_Y[1] - 16 - (BODY_Y[0] + 20)
  while height() > budget:
    if len(check_labels) > 1 and not check_in_row:
      check_labels.pop()
    elif has_heading:
      has_heading = False
    elif len(field_labels) > 2:
      field_labels.pop()
    elif has_panel:
      has_panel = False
    elif tab_labels:
      tab_labels, tab_boxes = [], []
    elif len(field_labels) > 1:
      field_labels.pop()
    else:
      check_in_row = True

  y = BODY_Y[0] + 20
  tab_line = None
  if tab_labels:
    active = _int(rng, 0, len(tab_labels) - 1)
    for i, (label, box) in enumerate(zip(tab_labels, tab_boxes)):
      items.append(_Item(TAB, label, (box[0], y, box[2], y + TAB_H), on=i == active))
    tab_line = y + TAB_H
    y += TAB_H + 28
  if has_heading:
    texts.append(_Text("heading", form_heading, (mx0, y, mx1, y + HEADING_H)))
    y += HEADING_H + 12
  for label in field_labels:
    value = ""
    if rng.random() < 0.5:
      options = FIELD_VALUES[label]
      value = options[_int(rng, 0, len(options) - 1)]
    need = max(260, _ref_w(value) + 60)
    if labels_left:
      fx0 = mx0 + labcol
      texts.append(_Text("label", label, (mx0, y, fx0 - 8, y + FIELD_H)))
      fw = _int(rng, min(need, mx1 - fx0), mx1 - fx0)
      items.append(_Item(FIELD, label, (fx0, y, fx0 + fw, y + FIELD_H), value=value))
      y += FIELD_H + 22
    else:
      texts.append(_Text("label", label, (mx0, y, mx1, y + LABEL_H)))
      y += LABEL_H + 4
      fw = _int(rng, min(max(need, 300), mw), mw)
      items.append(_Item(FIELD, label, (mx0, y, mx0 + fw, y + FIELD_H), value=value))
      y += FIELD_H + 22
  y += 4
  widths = check_widths()
  if check_in_row and sum(widths) + 30 * (len(widths) - 1) <= mw:
    x = mx0
    for label, w in zip(check_labels, widths):
      items.append(_Item(CHECKBOX, label, (x, y, x + w, y + CHECK_H), on=bool(rng.random() < 0.5)))
      x += w + 30
    y += CHECK_H + 12
  else:
    for label, w in zip(check_labels, widths):
      items.append(_Item(CHECKBOX, label, (mx0, y, mx0 + w, y + CHECK_H), on=bool(rng.random() < 0.5)))
      y += CHECK_H + 12
  y += 10

  # Dialog buttons: in a framed panel with a title and a message, or in a footer; right-aligned.
  bw = [max(130, _ref_w(b) + 52) for b in dialog_labels]
  row_w = sum(bw) + 16 * (len(bw) - 1)
  primary = next((i for i, b in enumerate(dialog_labels) if b in PRIMARY), 0)
  panel = footer_line = None
  if has_panel:
    dtitle = DIALOG_TITLES[_int(rng, 0, len(DIALOG_TITLES) - 1)]
    message = MESSAGES[_int(rng, 0, len(MESSAGES) - 1)]
    pw = min(mw, max(row_w + 40, _ref_w(dtitle) + 60, _ref_w(message) + 60))
    pw = _int(rng, pw, min(mw, max(pw, 620)))
    ph = PANEL_HEADER_H + MESSAGE_H + BUTTON_H + 38
    py = BODY_Y[1] - 16 - ph if panel_bottom else y
    px0 = mx1 - pw if rng.random() < 0.6 else mx0
    panel = (px0, py, px0 + pw, py + ph)
    texts.append(_Text("panel_title", dtitle, (px0 + 20, py, px0 + pw - 20, py + PANEL_HEADER_H)))
    my = py + PANEL_HEADER_H + 8
    texts.append(_Text("muted", message, (px0 + 20, my, px0 + pw - 20, my + MESSAGE_H)))
    by, bx = my + MESSAGE_H + 12, px0 + pw - 20 - row_w
  else:
    by = BODY_Y[1] - 16 - BUTTON_H if panel_bottom else y + 14
    footer_line = by - 14
    bx = mx1 - row_w
  for i, (label, w) in enumerate(zip(dialog_labels, bw)):
    items.append(_Item(BUTTON, label, (bx, by, bx + w, by + BUTTON_H), on=i == primary))
    bx += w + 16

  status = STATUS[_int(rng, 0, len(STATUS) - 1)]
  texts.append(_Text("status", status, (20, STATUS_Y[0], 980, STATUS_Y[1])))

  # The question: a type first (so rare types are asked as often as common ones), then an element of it.
  types = sorted({it.type for it in items})
  kind = types[_int(rng, 0, len(types) - 1)]
  candidates = [i for i, it in enumerate(items) if it.type == kind]
  target = candidates[_int(rng, 0, len(candidates) - 1)]
  question = f"Click the '{items[target].label}' {NOUNS[kind]}."
  content = json.dumps(
    {
      "kind": KIND,
      "title": title,
      "elements": [{"type": it.type, "label": it.label, "box": [v / 1000 for v in it.box]} for it in items],
      "target": target,
      "question": question,
    },
    sort_keys=True,
    separators=(",", ":"),
  )
  sidebar = (sx0, BODY_Y[0], sx1, BODY_Y[1])
  return _Layout(
    tuple(items), tuple(texts), target, question, sidebar, (mx0, BODY_Y[0], mx1, BODY_Y[1]), tab_line, panel,
    footer_line, tuple(separators), content,
  )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Drawing (size and theme).


class _Grid:
  """Maps thousandths to pixels: exclusive ends in thousandths become inclusive pixel ends, so boxes that touch in
  the layout never share a pixel."""

  def __init__(self, width: int, height: int):
    self.w, self.h = width, height

  def px(self, x: int) -> int:
    return (x * self.w + 500) // 1000

  def py(self, y: int) -> int:
    return (y * self.h + 500) // 1000

  def box(self, b: MBox) -> Box:
    return (self.px(b[0]), self.py(b[1]), self.px(b[2]) - 1, self.py(b[3]) - 1)


class _Canvas(_Grid):
  """Draws themed shapes and text at one font size."""

  def __init__(self, width: int, height: int, theme: Theme, fs: int):
    super().__init__(width, height)
    self.theme, self.fs = theme, fs
    self.image = Image.new("RGB", (width, height), theme.window)
    self.draw = ImageDraw.Draw(self.image)
    self.lw = max(1, round(min(width, height) / 420))

  def radius(self, box: Box, frac: float | None = None) -> int:
    frac = self.theme.radius if frac is None else frac
    return int(min(box[2] - box[0] + 1, box[3] - box[1] + 1) * frac)

  def rect(self, box: Box, fill, outline=None, radius: int = 0, gradient: tuple[RGB, RGB] | None = None, **kw):
    if gradient is not None and gradient[0] != gradient[1]:
      top, bottom = np.array(gradient[0], float), np.array(gradient[1], float)
      n = max(1, box[3] - box[1])
      for y in range(box[1], box[3] + 1):
        color = tuple(int(round(c)) for c in top + (bottom - top) * (y - box[1]) / n)
        self.draw.line((box[0], y, box[2], y), fill=color)
      if outline is not None:
        self.draw.rectangle(box, outline=outline, width=self.lw)
    elif radius > 0:
      self.draw.rounded_rectangle(box, radius=radius, fill=fill, outline=outline, width=self.lw, **kw)
    else:
      self.draw.rectangle(box, fill=fill, outline=outline, width=self.lw if outline is not None else 0)

  def bevel(self, box: Box, raised: bool):
    light, dark = (255, 255, 255), (128, 128, 128)
    a, b = (light, dark) if raised else (dark, light)
    x1, y1, x2, y2 = box[0] + self.lw, box[1] + self.lw, box[2] - self.lw, box[3] - self.lw
    self.draw.line((x1, y2, x1, y1, x2, y1), fill=a, width=self.lw)
    self.draw.line((x1, y2, x2, y2, x2, y1), fill=b, width=self.lw)

  def text(self, xy, text: str, fill: RGB, anchor: str):
    self.draw.text(xy, text, font=_font(self.fs), fill=fill, anchor=anchor)

  def text_in(self, box: Box, text: str, fill: RGB, align: str = "c", inset: int = 0):
    cy = (box[1] + box[3] + 1) / 2
    if align == "c":
      self.text(((box[0] + box[2] + 1 + inset) / 2, cy), text, fill, "mm")
    else:
      self.text((box[0] + inset, cy), text, fill, "lm")


def _pad(theme: Theme, fs: int) -> int:
  return max(3, round(theme.pad_em * fs))


def _check_geometry(box: Box, fs: int, theme: Theme) -> tuple[int, int, int]:
  """(square side, square left inset, label left inset) of a checkbox in pixels."""
  side = min(round(0.62 * (box[3] - box[1] + 1)), fs + 2)
  inset = _pad(theme, fs) // 2 + 2
  return side, inset, inset + side + max(4, fs // 2)


def _fits(lay: _Layout, cv: _Grid, theme: Theme, fs: int) -> bool:
  """Whether every text fits its slot at font size ``fs``."""
  pad = _pad(theme, fs)
  th = _text_wh("Ag", fs)[1]
  slots = [(t.text, cv.box(t.box), 2, 2) for t in lay.texts]
  for it in lay.items:
    box = cv.box(it.box)
    if it.type == CHECKBOX:
      slots.append((it.label, box, _check_geometry(box, fs, theme)[2], pad // 2 + 1))
    else:
      slots.append((it.label, box, pad, pad))
  for text, box, left, right in slots:
    w, _ = _text_wh(text, fs)
    if left + w + right > box[2] - box[0] + 1 or th + 2 > box[3] - box[1] + 1:
      return False
  return True


def _draw_controls(cv: _Canvas, bar: Box) -> None:
  """The window's minimise / maximise / close buttons (decoration, not clickable elements)."""
  theme = cv.theme
  h = min(bar[3] - bar[1] + 1, 3 * cv.fs)  # tall title bars (portrait canvases) keep desktop-sized buttons
  s = max(6, h // 3)
  cy = (bar[1] + bar[3]) // 2
  if theme.controls == "circles":
    for i, color in enumerate(((255, 95, 86), (255, 189, 46), (39, 201, 63))):
      cx = bar[0] + h // 2 + i * (s + s // 2 + 2)
      cv.draw.ellipse((cx - s // 2, cy - s // 2, cx + s // 2, cy + s // 2), fill=color)
    return
  for i in range(3):
    cx = bar[2] - h // 2 - i * (h + h // 4)
    x1, y1, x2, y2 = cx - s // 2, cy - s // 2, cx + s // 2, cy + s // 2
    if theme.controls == "boxes":
      frame = (x1 - 3, y1 - 3, x2 + 3, y2 + 3)
      cv.rect(frame, theme.button[0], outline=theme.button_border)
      color = theme.text
    else:
      color = theme.title_text
    if i == 0:
      cv.draw.line((x1, y1, x2, y2), fill=color, width=cv.lw)
      cv.draw.line((x1, y2, x2, y1), fill=color, width=cv.lw)
    elif i == 1:
      cv.draw.rectangle((x1, y1, x2, y2), outline=color, width=cv.lw)
    else:
      cv.draw.line((x1, y2, x2, y2), fill=color, width=cv.lw)


def _draw_button(cv: _Canvas, box: Box, label: str, primary: bool) -> None:
  theme = cv.theme
  r = cv.radius(box)
  if primary:
    cv.rect(box, theme.primary, outline=theme.button_border, radius=r)
    if theme.bevel:  # the classic default button: a thicker dark frame
      cv.draw.rectangle(box, outline=(0, 0, 0), width=cv.lw + 1)
    text = theme.primary_text
  else:
    cv.rect(box, theme.button[0], outline=theme.button_border, radius=r, gradient=theme.button)
    text = theme.button_text
  if theme.bevel:
    cv.bevel(box, raised=True)
  cv.text_in(box, label, text)


def _draw_field(cv: _Canvas, box: Box, value: str, pad: int) -> None:
  theme = cv.theme
  if theme.name == "material":  # filled field with an underline
    cv.rect(box, theme.field_fill, radius=cv.radius(box), corners=(True, True, False, False))
    cv.draw.rectangle((box[0], box[3] - cv.lw, box[2], box[3]), fill=theme.field_border)
  else:
    cv.rect(box, theme.field_fill, outline=theme.field_border, radius=cv.radius(box, min(theme.radius, 0.25)))
    if theme.bevel:
      cv.bevel(box, raised=False)
  if value and _text_wh(value, cv.fs)[0] + 2 * pad <= box[2] - box[0]:
    cv.text_in(box, value, theme.muted, "l", pad)


def _draw_checkbox(cv: _Canvas, box: Box, label: str, checked: bool) -> None:
  theme = cv.theme
  side, inset, text_x = _check_geometry(box, cv.fs, theme)
  cy = (box[1] + box[3]) // 2
  sq = (box[0] + inset, cy - side // 2, box[0] + inset + side - 1, cy - side // 2 + side - 1)
  filled = checked and theme.name in ("material", "mobile", "dark")
  r = cv.radius(sq, 0.5 if theme.name == "mobile" else min(theme.radius, 0.2))
  cv.rect(sq, theme.accent if filled else theme.check_fill, outline=None if filled else theme.check_border, radius=r)
  if theme.bevel:
    cv.bevel(sq, raised=False)
  if checked:
    mark = (255, 255, 255) if filled else theme.accent
    x1, y1, s = sq[0], sq[1], side
    points = [(x1 + s * 0.22, y1 + s * 0.52), (x1 + s * 0.42, y1 + s * 0.72), (x1 + s * 0.78, y1 + s * 0.28)]
    cv.draw.line(points, fill=mark, width=max(2, side // 7), joint="curve")
  cv.text_in(box, label, theme.text, "l", text_x)


def _render(lay: _Layout, theme: Theme, width: int, height: int) -> tuple[Image.Image, int]:
  preferred = max(MIN_FONT_PX, round(min(MAX_FONT_PX, round(FONT_FRAC * min(width, height))) * theme.font_scale))
  grid = _Grid(width, height)
  fs = next((f for f in range(preferred, MIN_FONT_PX - 1, -1) if _fits(lay, grid, theme, f)), None)
  if fs is None:
    raise ValueError(
      f"gui scene does not fit a {width}x{height} image with fonts >= {MIN_FONT_PX} px; use a larger size or "
      "another seed"
    )
  cv = _Canvas(width, height, theme, fs)
  pad = _pad(theme, fs)
  w1 = width - 1

  # Window chrome: title bar, menu bar, toolbar, status bar.
  title_bar = (0, cv.py(TITLE_Y[0]), w1, cv.py(TITLE_Y[1]) - 1)
  cv.rect(title_bar, theme.title_bg[0], gradient=theme.title_bg)
  _draw_controls(cv, title_bar)
  cv.rect((0, cv.py(MENU_Y[0]), w1, cv.py(MENU_Y[1]) - 1), theme.menu_bg)
  toolbar = (0, cv.py(TOOLBAR_Y[0]), w1, cv.py(TOOLBAR_Y[1]) - 1)
  cv.rect(toolbar, theme.toolbar_bg)
  cv.draw.rectangle((0, toolbar[3] - cv.lw + 1, w1, toolbar[3]), fill=theme.line)
  for x in lay.separators:
    cv.draw.rectangle(
      (
        cv.px(x) - cv.lw // 2,
        cv.py(TOOL_BUTTON_Y[0]) + 2,
        cv.px(x) - cv.lw // 2 + cv.lw - 1,
        cv.py(TOOL_BUTTON_Y[1]) - 3,
      ),
      fill=theme.line,
    )
  cv.rect((0, cv.py(STATUS_Y[0]), w1, height - 1), theme.status_bg)
  cv.draw.rectangle((0, cv.py(STATUS_Y[0]), w1, cv.py(STATUS_Y[0]) + cv.lw - 1), fill=theme.line)

  # Sidebar panel, with a rule on its inner edge.
  sb = cv.box(lay.sidebar)
  cv.rect(sb, theme.sidebar_bg)
  edge = sb[2] - cv.lw + 1 if sb[0] == 0 else sb[0]
  cv.draw.rectangle((edge, sb[1], edge + cv.lw - 1, sb[3]), fill=theme.line)
  if lay.tab_line is not None:
    main = cv.box(lay.main)
    y = cv.py(lay.tab_line)
    cv.draw.rectangle((main[0], y, main[2], y + cv.lw - 1), fill=theme.line)
  if lay.footer_line is not None:
    main = cv.box(lay.main)
    y = cv.py(lay.footer_line)
    cv.draw.rectangle((main[0], y, main[2], y + cv.lw - 1), fill=theme.line)
  if lay.panel is not None:
    pb = cv.box(lay.panel)
    r = cv.radius(pb, min(theme.radius, 0.08))
    if theme.shadow is not None:
      off = max(2, cv.lw * 3)
      cv.rect((pb[0] + off, pb[1] + off, pb[2] + off, pb[3] + off), theme.shadow, radius=r)
    cv.rect(pb, theme.panel_fill, outline=theme.line, radius=r)
    header = (pb[0], pb[1], pb[2], cv.py(lay.panel[1] + PANEL_HEADER_H) - 1)
    if theme.panel_header != theme.panel_fill:
      cv.rect(header, theme.panel_header, radius=r, corners=(True, True, False, False) if r else None)
    cv.draw.rectangle((pb[0], header[3], pb[2], header[3] + cv.lw - 1), fill=theme.line)
    cv.rect(pb, None, outline=theme.line, radius=r)  # again: the header's fill covers the top of the outline

  colors = {
    "title": theme.title_text,
    "heading": theme.text,
    "label": theme.text,
    "muted": theme.muted,
    "status": theme.status_text,
    "panel_title": (255, 255, 255) if theme.bevel else theme.text,
  }
  for t in lay.texts:
    box = cv.box(t.box)
    if t.role == "title" and theme.controls == "circles":
      cv.text_in((0, box[1], w1, box[3]), t.text, colors[t.role])
    else:
      cv.text_in(box, t.text, colors[t.role], "l", 0)

  for it in lay.items:
    box = cv.box(it.box)
    if it.type == MENU:
      cv.text_in(box, it.label, theme.menu_text)
    elif it.type == BUTTON:
      _draw_button(cv, box, it.label, it.on)
    elif it.type == ITEM:
      fill = theme.selected_fill if it.on else theme.item_fill
      if fill is not None:
        cv.rect(box, fill, radius=cv.radius(box, min(theme.radius, 0.3)))
      cv.text_in(box, it.label, theme.selected_text if it.on else theme.text, "l", pad + 2)
    elif it.type == TAB:
      r = cv.radius(box, min(theme.radius, 0.3))
      fill = theme.tab_active if it.on else theme.tab_fill
      cv.rect(box, fill, outline=theme.line if theme.bevel else None, radius=r, corners=(True, True, False, False))
      if it.on and not theme.bevel:
        cv.draw.rectangle((box[0], box[3] - 2 * cv.lw - 1, box[2], box[3]), fill=theme.accent)
      cv.text_in(box, it.label, theme.tab_text)
    elif it.type == FIELD:
      _draw_field(cv, box, it.value, pad)
    else:
      _draw_checkbox(cv, box, it.label, it.on)
  return cv.image, fs


def _check_int(name: str, value, lo: int, hi: int) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
    raise ValueError(f"gui scene {name} must be an int in [{lo}, {hi}], got {value!r}")
  return int(value)


def describe(item_type: str, label: str) -> str:
  """How a question or a reasoning step names an element: "the 'Save' button"."""
  return f"the '{label}' {NOUNS[item_type]}"


@functools.lru_cache(maxsize=32)
def _scene(style: str, seed: int, width: int, height: int, question: str) -> Scene:
  lay = _layout(seed)
  image, _ = _render(lay, THEMES[style], width, height)
  grid = _Grid(width, height)
  elements = [Element(describe(it.type, it.label), grid.box(it.box)) for it in lay.items]
  target = elements[lay.target]
  others = tuple(e for i, e in enumerate(elements) if i != lay.target)
  return Scene(image, lay.question, POINT, "", target.box, target, others, lay.content)


def scene(style: str, seed: int, width: int, height: int, question: str = "click") -> Scene:
  """The screen for ``seed`` drawn in theme ``style`` at ``width`` x ``height`` (multiples of 28), and its click
  question. Cached: equal arguments return the same object (do not mutate its image)."""
  if not isinstance(style, str) or style not in THEMES:
    raise ValueError(f"unknown gui style {style!r}; choose one of {sorted(THEMES)}")
  if not isinstance(question, str) or question not in QUESTIONS:
    raise ValueError(f"unknown gui question {question!r}; choose one of {list(QUESTIONS)}")
  seed = _check_int("seed", seed, 0, 2**63 - 1)
  width = _check_int("width", width, MIN_SIDE, MAX_SIDE)
  height = _check_int("height", height, MIN_SIDE, MAX_SIDE)
  if width % PATCH_MULTIPLE or height % PATCH_MULTIPLE:
    raise ValueError(f"gui scene size {width}x{height}: both sides must be multiples of {PATCH_MULTIPLE}")
  return _scene(style, seed, width, height, question)
