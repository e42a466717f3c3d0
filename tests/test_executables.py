"""Compiled restore programs kept on disk: a second Restorer loads every stage program without
tracing and computes the same output; a program option is another program of the stages that
read it; an unreadable file is rebuilt."""

import dataclasses
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from seedvr2_jax.infer import executables, one_step
from seedvr2_jax.infer.options import RestoreOptions

SIZE = (16, 32)


@pytest.fixture(scope="module")
def models(restore_models):
  return restore_models


def _restore(models, options):
  restorer = one_step.Restorer(*models, options, SIZE)
  raw = np.random.default_rng(0).integers(0, 256, (1, 5, 24, 40, 3), np.uint8)
  keys = jax.random.split(jax.random.key(1), 1)
  return restorer, np.asarray(restorer(raw, keys))


# Stage programs of a 5-frame clip: encode, dit, decode of the first latent frame and of the next.
PROGRAMS = 4


def test_programs_are_loaded_untraced_keyed_by_what_they_depend_on(models, tmp_path):
  options = RestoreOptions(cache_dir=str(tmp_path), resolution=SIZE)
  first, out_first = _restore(models, options)
  assert (first.store.compiled, first.store.loaded) == (PROGRAMS, 0)
  assert first.traces == {"encode": 1, "dit": 1, "decode": 2}
  paths = sorted((tmp_path / "executables").iterdir())
  assert len(paths) == PROGRAMS
  # Host-only options (seed, crf, overwrite) do not change the programs: loaded, not traced.
  second, out_second = _restore(models, dataclasses.replace(options, seed=3, crf=30,
                                                             overwrite=True))
  assert (second.store.compiled, second.store.loaded) == (0, PROGRAMS)
  assert second.traces == {"encode": 0, "dit": 0, "decode": 0}
  np.testing.assert_array_equal(out_second, out_first)
  # A program option is another program for the stages that read it: the colour fix for the
  # two decode programs; the encode and the DiT are loaded.
  other, _ = _restore(models, dataclasses.replace(options, colorfix="adain"))
  assert (other.store.compiled, other.store.loaded) == (2, PROGRAMS - 2)
  assert other.traces == {"encode": 0, "dit": 0, "decode": 2}
  assert len(os.listdir(tmp_path / "executables")) == PROGRAMS + 2
  # An unreadable file is compiled again and replaced; the other stages still load.
  paths[0].write_bytes(paths[0].read_bytes()[:100])
  with pytest.warns(UserWarning, match="cannot load it"):
    again, out_again = _restore(models, options)
  assert (again.store.compiled, again.store.loaded) == (1, PROGRAMS - 1)
  assert sum(again.traces.values()) == 1
  np.testing.assert_array_equal(out_again, out_first)
  assert paths[0].stat().st_size > 100


def test_unwritable_store_warns_and_still_returns_the_program(tmp_path):
  blocker = tmp_path / "not_a_dir"
  blocker.write_text("")  # the store directory's place is taken by a file
  store = executables.ExecutableStore(str(blocker / "executables"))
  lowered = jax.jit(lambda x: x * 2 + 1).lower(jax.ShapeDtypeStruct((3,), np.float32))
  with pytest.warns(UserWarning, match="not kept"):
    compiled = store.get(("double plus one",), lambda: lowered)
  np.testing.assert_array_equal(compiled(np.arange(3, dtype=np.float32)), [1, 3, 5])
  assert store.compiled == 1


STORE_SCRIPT = """
import sys
import jax, jax.numpy as jnp
from seedvr2_jax.infer import executables
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
def f(x, y):
  for _ in range(3):
    x = jnp.where(x > 0, jnp.tanh(x @ y), y - x)
  return x.sum()
x = jnp.ones((64, 64))
lower = lambda: jax.jit(f).lower(x, x)
if sys.argv[2] == "xla":
  lower().compile()
else:
  store = executables.ExecutableStore(sys.argv[3])
  print(float(store.get("f", lower)(x, x)), store.loaded)
"""


def test_a_program_in_xla_cache_is_stored_runnable(tmp_path):
  """A program XLA's persistent compilation cache already holds (an earlier run, or the same
  program under another key) is compiled past that cache for the store: on CPU the cached
  executable serializes to a file that a later process loads but cannot run."""
  run = lambda *args: subprocess.run(
      [sys.executable, "-c", STORE_SCRIPT, str(tmp_path / "xla"), *args], check=True,
      capture_output=True, text=True).stdout.split()
  run("xla")
  compiled = run("store", str(tmp_path / "executables"))
  loaded = run("store", str(tmp_path / "executables"))
  assert compiled[1] == "0" and loaded == [compiled[0], "1"]
