"""ViGoRL's released multi-turn RL recipe on Qwen2.5-VL-3B, synthetic GUI grounding, on accelerators: the
visual-search recipe (``vigorl_search_qwen25vl_3b.py``) with ViGoRL's GUI crops (offset 50, crop 384, the dot) on
1,344 x 840 mock screens (seen at 1,260 x 784 under ``max_pixels`` 1280 x 28 x 28).

  python -m vrrl_jax.train --config configs/vigorl_gui_qwen25vl_3b.py \
      --config.init_checkpoint=/path/qwen25vl3b_orbax --workdir gs://BUCKET/runs/vigorl_gui
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
  "vigorl_search_qwen25vl_3b", pathlib.Path(__file__).with_name("vigorl_search_qwen25vl_3b.py")
)
vigorl_search_qwen25vl_3b = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vigorl_search_qwen25vl_3b)


def get_config():
  c = vigorl_search_qwen25vl_3b.get_config()
  c.data.update(kind="gui", questions=("click",), offset=50, crop_size=384, dot=True)
  return c
