"""ViGoRL's multi-turn zoom-in on synthetic GUI grounding ("Click the 'Export' button."), at toy scale on a CPU:
SFT on search-tree style transcripts, GRPO, eval in and out of distribution (dark and mobile themes, other sizes).

  python -m vrrl_jax.train --config configs/vigorl_gui_tiny_cpu.py --workdir runs/vigorl_gui

The visual-search tiny config (``vigorl_search_tiny_cpu.py``) with mock screens of 504 x 504 px seen at 252 x 252,
where 16 px labels are 8 px; a zoom cuts an 84 px window of the view (168 px of the screen) and shows it at 252 px
with ViGoRL's GUI dot (red, white outline) on the point. The answer is a point inside the element's box.
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
  "vigorl_search_tiny_cpu", pathlib.Path(__file__).with_name("vigorl_search_tiny_cpu.py")
)
vigorl_search_tiny_cpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vigorl_search_tiny_cpu)


def get_config():
  c = vigorl_search_tiny_cpu.get_config()
  c.data.update(kind="gui", questions=("click",), dot=True)
  return c
