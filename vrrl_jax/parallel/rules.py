"""Logical-axis rules (MaxText style): which mesh axes each logical parameter / activation axis is split over.

Mesh axes: "data" (pure data parallel), "fsdp" (data parallel with parameters split across it), "tensor" (heads,
MLP and vocab split). A rule table is a tuple of (logical name, mesh axis | tuple of mesh axes | None), applied in
order by flax: a dimension whose name has no rule, or whose mesh axes an earlier rule already gave to another
dimension of the same array, is replicated.
"""

BATCH = ("data", "fsdp")

# Training and log-prob computation: parameters split over fsdp (embed dims) and tensor.
DEFAULT_RULES = (
  # Activations.
  ("activation_batch", BATCH),
  ("activation_length", None),
  ("activation_embed", None),
  # Decoder parameters.
  ("vocab", "tensor"),
  ("embed", "fsdp"),
  ("mlp", "tensor"),
  ("q_heads", "tensor"),
  ("kv_heads", "tensor"),
  ("head_dim", None),
  ("norm", None),
  ("layers", None),
  # Vision tower parameters.
  ("vision_patch", None),
  ("vision_embed", "fsdp"),
  ("vision_mlp", "tensor"),
  ("vision_heads", "tensor"),
  ("vision_merge", "fsdp"),
  # KV cache.
  ("cache_batch", BATCH),
  ("cache_length", None),
  ("cache_kv_heads", "tensor"),
  ("cache_head_dim", None),
)

# Sampling: no per-step all-gathers of fsdp shards; parameters are split over tensor only and replicated over
# data and fsdp, which both split the batch.
DECODE_RULES = tuple((name, None if axes == "fsdp" else axes) for name, axes in DEFAULT_RULES)


def mesh_axes_used(rules) -> set[str]:
  """Every mesh axis a rule table refers to (to check a table against a mesh)."""
  used = set()
  for _, axes in rules:
    if axes is None:
      continue
    used.update((axes,) if isinstance(axes, str) else axes)
  return used
