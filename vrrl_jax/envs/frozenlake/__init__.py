"""The FrozenLake spatial-navigation task: maps, parser, renderer and the turn protocol."""

from vrrl_jax.envs.frozenlake.maps import (  # noqa: F401
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
from vrrl_jax.envs.frozenlake.parse import FINAL, ROUTE, ParsedTurn, parse_actions, parse_turn  # noqa: F401
