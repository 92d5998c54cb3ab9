"""The FrozenLake spatial-navigation task: maps, parser, renderer and the turn protocol."""

from vrrl_jax.tasks.frozenlake.maps import (  # noqa: F401
  MOVES,
  MapSpec,
  MapSpecError,
  distance_map,
  is_exact_match,
  layout_hash,
  parse_spec,
  shortest_path,
  shortest_path_len,
  walk,
)
from vrrl_jax.tasks.frozenlake.parse import FINAL, ROUTE, ParsedTurn, parse_actions, parse_turn  # noqa: F401
from vrrl_jax.tasks.frozenlake.generate import (  # noqa: F401
  eval_layout_hashes,
  generate_map,
  generate_maps,
  load_layout_hashes,
  spec_record,
)
from vrrl_jax.tasks.frozenlake.protocol import (  # noqa: F401
  FEEDBACK_TEXT,
  FIRST_USER_TEXT,
  TASK_PROMPT,
  Episode,
  Step,
)
from vrrl_jax.tasks.frozenlake.render import (  # noqa: F401
  STYLES,
  RenderStyle,
  canvas_margins,
  cell_box,
  cell_center,
  get_style,
  render_feedback,
  render_map,
  route_vertices,
)
