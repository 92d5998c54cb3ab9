"""The task seam: generic layers import no concrete task, no module imports itself back, a task is chosen by name."""

import ast
import pathlib

import pytest

from vrrl_jax import tasks

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "vrrl_jax"
# Not a generic layer: the pretraining stage, which builds the shipped tiny VLM and its tokenizer from
# FrozenLake's perception tasks and text.
TASK_CONSUMERS = ("vrrl_jax.pretrain",)


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> set[str]:
  """Every vrrl_jax module ``name`` imports, at module level or inside functions (``from pkg import sub`` counts
  as an import of ``pkg.sub`` when that is a module)."""
  path = MODULES[name]
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names if a.name.startswith("vrrl_jax"))
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      if not base.startswith("vrrl_jax"):
        continue
      for alias in node.names:
        out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
  return {m for m in out if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES}


def test_generic_layers_import_no_task():
  concrete = [m for m in MODULES if m.startswith("vrrl_jax.tasks.")]
  assert "vrrl_jax.tasks.frozenlake" in concrete
  offenders = {}
  for name, imported in GRAPH.items():
    if name.startswith("vrrl_jax.tasks") or name.startswith(TASK_CONSUMERS):
      continue
    bad = sorted(m for m in imported if m.startswith("vrrl_jax.tasks."))
    if bad:
      offenders[name] = bad
  assert not offenders, f"generic modules importing a concrete task: {offenders}"
  # The ones that used to (ARCHITECTURE.md) are in the graph, so the check above saw them.
  for name in ("vrrl_jax.sampling.rollout", "vrrl_jax.rl.prefix_buffer", "vrrl_jax.rl_loop", "vrrl_jax.trainer"):
    assert name in GRAPH


def test_no_import_cycles():
  """Depth-first search for a back edge over every vrrl_jax import (function-local ones included)."""
  state, stack, cycles = {}, [], []

  def visit(name):
    state[name] = "open"
    stack.append(name)
    for dep in sorted(GRAPH[name]):
      if state.get(dep) == "open":
        cycles.append(stack[stack.index(dep) :] + [dep])
      elif dep not in state:
        visit(dep)
    stack.pop()
    state[name] = "done"

  for name in sorted(GRAPH):
    if name not in state:
      visit(name)
  assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_a_task_is_loaded_by_name_with_clear_errors(monkeypatch):
  import sys
  import types

  from vrrl_jax.tasks import frozenlake

  assert tasks.load("frozenlake") is frozenlake
  with pytest.raises(ValueError, match="unknown task 'chess'"):
    tasks.load("chess")
  with pytest.raises(ValueError, match="task package name"):
    tasks.load("../frozenlake")
  half = types.ModuleType("vrrl_jax.tasks.half")
  half.new_episode = frozenlake.new_episode
  monkeypatch.setitem(sys.modules, "vrrl_jax.tasks.half", half)
  with pytest.raises(ValueError, match=r"is not a task: it lacks \[.*'score_batch'"):
    tasks.load("half")
