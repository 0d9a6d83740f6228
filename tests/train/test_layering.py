"""Import layering of attnjax.train and attnjax.inspect: no cycle, even through local imports.

The loop draws with attnjax.inspect (curves, attention images); attnjax.inspect's library
reads runs through attnjax.run_files and never imports attnjax.train. Only the command
line (attnjax/inspect/cli.py, ``python -m attnjax.inspect``), which nothing imports,
restores a workdir with attnjax.train.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(ROOT, "attnjax")


def _modules() -> dict[str, str]:
  out = {}
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        rel = os.path.relpath(os.path.join(root, name), ROOT)[:-3].replace(os.sep, ".")
        out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(
            root, name)
  return out


def _graph() -> dict[str, set[str]]:
  """Module -> modules it imports (anywhere in the file), with the package ``__init__``s
  an import runs (importing ``a.b.c`` runs ``a`` and ``a.b`` first) except its own."""
  modules = _modules()
  graph = {}
  for module, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read())
    targets = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
      else:
        continue
      for name in names:
        if name in modules:
          parts = name.split(".")
          targets.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    # The packages a module lies in are already running when it runs (a submodule
    # importing a sibling through its package is no cycle).
    own = module.split(".")
    targets -= {".".join(own[:i]) for i in range(1, len(own))}
    targets &= set(modules)
    targets.discard(module)
    graph[module] = targets
  return graph


def _cycle(graph: dict[str, set[str]], nodes: set[str]) -> list[str] | None:
  """A cycle among ``nodes`` (as a path), or None."""
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(n):
    state[n] = 1
    stack.append(n)
    for m in sorted(graph[n] & nodes):
      if state.get(m) == 1:
        return stack[stack.index(m):] + [m]
      if m not in state:
        found = visit(m)
        if found:
          return found
    stack.pop()
    state[n] = 2
    return None

  for n in sorted(nodes):
    if n not in state:
      found = visit(n)
      if found:
        return found
  return None


def test_no_import_cycle_through_train_and_inspect():
  graph = _graph()
  nodes = {m for m in graph if m.startswith(("attnjax.train", "attnjax.inspect"))} | {
      "attnjax", "attnjax.run_files"}
  assert _cycle(graph, nodes) is None, " -> ".join(_cycle(graph, nodes))


def test_inspect_library_does_not_import_train():
  graph = _graph()
  library = [m for m in graph if m.startswith("attnjax.inspect")
             and m not in ("attnjax.inspect.cli", "attnjax.inspect.__main__")]
  assert library
  for module in library:
    assert not {t for t in graph[module] if t.startswith("attnjax.train")}, module


def test_the_cycle_finder_finds_a_cycle():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
  assert _cycle(graph, set(graph)) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}, {"a", "b"}) is None
