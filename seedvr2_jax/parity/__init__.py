"""`seedvr2-jax parity`: the port against outputs of the official code (fixture directories)."""

from __future__ import annotations

import numpy as np

from seedvr2_jax.parity import dit, pipeline, vae
from seedvr2_jax.errors import FixtureError
from seedvr2_jax.parity.common import Fixture

# component -> (check function, files the fixture must hold for it)
COMPONENTS = {
    "dit3b": (dit.run, dit.REQUIRED["dit3b"]),
    "dit7b": (dit.run, dit.REQUIRED["dit7b"]),
    "vae": (vae.run, vae.REQUIRED),
    "pipeline": (pipeline.run, pipeline.REQUIRED),
}


def run(fixture_dir: str, components: list[str] | None = None, log=print) -> bool:
  """Runs the requested components (default: all); prints one line each; True if all pass."""
  fixture = Fixture(fixture_dir)
  names = components or list(COMPONENTS)
  unknown = [n for n in names if n not in COMPONENTS]
  if unknown:
    raise FixtureError(f"unknown parity component(s) {', '.join(unknown)}; "
                       f"known: {', '.join(COMPONENTS)}")
  all_ok, ran = True, 0
  for name in names:
    check_fn, required = COMPONENTS[name]
    if not fixture.has(*required):
      log(f"{name}: skipped (not in fixture {fixture_dir})")
      continue
    try:
      checks = check_fn(fixture, name)
    except KeyError as e:
      raise FixtureError(f"{fixture_dir}: config.json or an array file lacks {e}") from None
    if not checks:
      raise FixtureError(f"{fixture_dir}: {name} has no reference outputs")
    ok = all(c.ok for c in checks)
    detail = ", ".join(f"{c.name} {c.max_rel_err:.3g}<={c.tol:g}" for c in checks)
    worst = max(checks, key=lambda c: c.max_rel_err / c.tol if np.isfinite(c.max_rel_err)
                else np.inf)
    log(f"{name} {'PASS' if ok else 'FAIL'} worst {worst.name} {worst.max_rel_err:.3e} "
        f"(tol {worst.tol:g}) [{detail}]")
    all_ok &= ok
    ran += 1
  if not ran:
    raise FixtureError(f"{fixture_dir}: none of the components {', '.join(names)} is present")
  return all_ok
