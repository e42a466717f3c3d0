"""The package's import graph has no cycles (every import counts, function-level ones too)."""

import ast
import os

PACKAGE = "seedvr2_jax"
ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), PACKAGE)


def _modules() -> dict[str, str]:
  """{dotted module name: file path} of every module of the package."""
  found = {}
  for folder, _, files in os.walk(ROOT):
    for name in files:
      if name.endswith(".py"):
        rel = os.path.relpath(os.path.join(folder, name), os.path.dirname(ROOT))[:-3]
        parts = rel.split(os.sep)
        if parts[-1] == "__init__":
          parts = parts[:-1]
        found[".".join(parts)] = os.path.join(folder, name)
  return found


def import_graph() -> dict[str, set[str]]:
  """{module: package modules it imports}; `from a import b` counts `a.b` when that is a module,
  else `a`; a package's `__init__` is not implied by importing one of its modules."""
  modules = _modules()
  graph = {}
  for name, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    deps = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        deps.update(a.name for a in node.names)
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          anchor = name.split(".")[:len(name.split(".")) - node.level + is_package]
          base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
          full = f"{base}.{alias.name}"
          deps.add(full if full in modules else base)
    graph[name] = {d for d in deps if d in modules and d != name}
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle as [a, b, ..., a], or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for dep in sorted(graph[node]):
      if state.get(dep) == "open":
        return stack[stack.index(dep):] + [dep]
      if dep not in state and (cycle := visit(dep)):
        return cycle
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_find_cycle_finds_one():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle():
  graph = import_graph()
  assert "seedvr2_jax.data.video_io" in graph["seedvr2_jax.data.sources"]  # edges are seen
  assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_importing_the_package_leaves_the_backend_alone():
  """`train --distributed` must call jax.distributed.initialize() before any backend exists:
  no module may touch one at import time (e.g. a module-level jnp array)."""
  import subprocess
  import sys
  code = ("import importlib, pkgutil, seedvr2_jax\n"
          "for m in pkgutil.walk_packages(seedvr2_jax.__path__, 'seedvr2_jax.'):\n"
          "  importlib.import_module(m.name)\n"
          "from jax._src import xla_bridge\n"
          "print(xla_bridge.backends_are_initialized())")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(ROOT))
  assert out.stdout.strip().splitlines()[-1] == "False"
