"""What a grounding scene shows (labels and numbers) and what can be asked about it, before any pixel.

The data of a scene is a pure function of (kind, style, seed): the style only decides how many rows, columns or
bars there are. Questions are a fixed, ordered list per scene; a spec picks one by index. Every question has
exactly one answer element: values are distinct within a table column and among the bars, and the largest and
smallest bar differ from the runner-up by at least ``MIN_EXTREME_GAP`` (on a 0-100 scale) so "the tallest bar"
is visible without reading numbers.

``scene_hash`` identifies the *content* (kind, labels, numbers), independent of style, size and question: two
specs with equal scene hashes show the same table or chart, so splits keep train and eval disjoint on it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from vrrl_jax.tasks.grounding import styles

TABLE, BARS, HBARS = "table", "bars", "hbars"
KINDS = (TABLE, BARS, HBARS)

ROW_THEMES = (
  ("Q1", "Q2", "Q3", "Q4"),
  ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
  ("2017", "2018", "2019", "2020", "2021", "2022", "2023", "2024"),
  ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
  ("North", "South", "East", "West"),
  ("Ants", "Bees", "Cats", "Dogs", "Eels", "Fox", "Gnus", "Hens"),
)
COLUMN_NAMES = (
  "Sales",
  "Cost",
  "Profit",
  "Units",
  "Price",
  "Tax",
  "Staff",
  "Stock",
  "Rate",
  "Score",
  "Fees",
  "Visits",
  "Orders",
  "Hours",
)
BAR_LABELS = (
  "Oslo",
  "Rome",
  "Lima",
  "Kyiv",
  "Doha",
  "Baku",
  "Riga",
  "Bern",
  "Nice",
  "Cork",
  "Pune",
  "Perth",
  "Quito",
  "Cairo",
  "Dubai",
  "Paris",
  "Delhi",
  "Tokyo",
  "Seoul",
  "Miami",
)
TABLE_VALUE_MAX = 999
BAR_VALUE_RANGE = (5, 100)
MIN_EXTREME_GAP = 8

# Question families per kind, in the order questions are listed.
FAMILIES = {
  TABLE: ("cell", "column_max", "column_min"),
  BARS: ("label", "max", "min"),
  HBARS: ("label", "max", "min"),
}


@dataclasses.dataclass(frozen=True)
class SceneData:
  """``labels``: table row labels or bar labels, in drawing order (top to bottom, left to right).
  ``columns``: table column headers (empty for charts). ``values``: a table's rows (one tuple of ints per row)
  or one int per bar."""

  kind: str
  labels: tuple[str, ...]
  columns: tuple[str, ...]
  values: tuple

  def to_dict(self) -> dict:
    values = [list(row) for row in self.values] if self.kind == TABLE else list(self.values)
    return {"kind": self.kind, "labels": list(self.labels), "columns": list(self.columns), "values": values}


@dataclasses.dataclass(frozen=True)
class QuestionTemplate:
  """A question before layout: ``target`` is the name of the element it asks for (see ``scenes``)."""

  family: str
  text: str
  target: str


def check_kind(kind: str) -> str:
  if kind not in KINDS:
    raise ValueError(f"unknown scene kind {kind!r}; choose one of {KINDS}")
  return kind


def scene_data(kind: str, style: str, seed: int) -> SceneData:
  """The scene's labels and numbers; deterministic in (kind, style, seed)."""
  check_kind(kind)
  st = styles.get_style(style)
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
    raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
  # The kind is mixed into the stream so a table and a chart with one seed do not share draws.
  rng = np.random.default_rng([int(seed), KINDS.index(kind)])
  if kind == TABLE:
    n_rows = int(rng.integers(st.table_rows[0], st.table_rows[1] + 1))
    n_cols = int(rng.integers(st.table_cols[0], st.table_cols[1] + 1))
    themes = [t for t in ROW_THEMES if len(t) >= n_rows]
    theme = themes[int(rng.integers(len(themes)))]
    start = int(rng.integers(len(theme) - n_rows + 1))
    labels = theme[start : start + n_rows]
    columns = tuple(COLUMN_NAMES[i] for i in rng.choice(len(COLUMN_NAMES), size=n_cols, replace=False))
    cols = [rng.choice(TABLE_VALUE_MAX, size=n_rows, replace=False) + 1 for _ in range(n_cols)]
    values = tuple(tuple(int(cols[c][r]) for c in range(n_cols)) for r in range(n_rows))
    return SceneData(kind, tuple(labels), columns, values)
  n_bars = int(rng.integers(st.bar_count[0], st.bar_count[1] + 1))
  pool = [label for label in BAR_LABELS if len(label) <= st.max_label_chars]
  if len(pool) < n_bars:
    raise ValueError(f"style {style!r}: only {len(pool)} bar labels have <= {st.max_label_chars} letters")
  labels = tuple(pool[i] for i in rng.choice(len(pool), size=n_bars, replace=False))
  lo, hi = BAR_VALUE_RANGE
  while True:
    values = rng.choice(np.arange(lo, hi + 1), size=n_bars, replace=False)
    ordered = np.sort(values)
    if ordered[-1] - ordered[-2] >= MIN_EXTREME_GAP and ordered[1] - ordered[0] >= MIN_EXTREME_GAP:
      break
  return SceneData(kind, labels, (), tuple(int(v) for v in values))


def scene_hash(data: SceneData) -> str:
  """sha256 of the canonical JSON of the content (kind, labels, columns, values)."""
  text = json.dumps(data.to_dict(), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()


def table_cell(row: str, column: str) -> str:
  return f"cell:{row}:{column}"


def bar_name(label: str) -> str:
  return f"bar:{label}"


def question_templates(data: SceneData) -> list[QuestionTemplate]:
  """Every question a scene can ask, in a fixed order: per family, in drawing order."""
  out = []
  if data.kind == TABLE:
    for r, row in enumerate(data.labels):
      for column in data.columns:
        out.append(
          QuestionTemplate("cell", f"Point to the cell in row '{row}' and column '{column}'.", table_cell(row, column))
        )
    for c, column in enumerate(data.columns):
      col = [row[c] for row in data.values]
      best = data.labels[int(np.argmax(col))]
      out.append(
        QuestionTemplate("column_max", f"Point to the largest value in column '{column}'.", table_cell(best, column))
      )
    for c, column in enumerate(data.columns):
      col = [row[c] for row in data.values]
      worst = data.labels[int(np.argmin(col))]
      out.append(
        QuestionTemplate("column_min", f"Point to the smallest value in column '{column}'.", table_cell(worst, column))
      )
    return out
  for label in data.labels:
    out.append(QuestionTemplate("label", f"Point to the bar labelled '{label}'.", bar_name(label)))
  tallest = "tallest" if data.kind == BARS else "longest"
  out.append(
    QuestionTemplate("max", f"Point to the {tallest} bar.", bar_name(data.labels[int(np.argmax(data.values))]))
  )
  out.append(QuestionTemplate("min", "Point to the shortest bar.", bar_name(data.labels[int(np.argmin(data.values))])))
  return out
