"""Compiled programs kept on disk and loaded without tracing.

XLA's compilation cache saves the compile, but a warm `restore` still traces the whole model
in Python (seconds for the 3B) to find its entry. Here the compiled executable itself is
serialized (`jax.experimental.serialize_executable`) under a key of everything the program
depends on: this package's source, the jax / jaxlib versions, the platform and devices, and a
description the caller gives (model configs, options, abstract arguments with their shardings).
A file that cannot be loaded (another jaxlib wrote it, it is truncated) is compiled again and
replaced; files are written atomically.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import warnings
from collections.abc import Callable

import jax
import jaxlib
from jax.experimental import serialize_executable
from jax.experimental.compilation_cache import compilation_cache

from seedvr2_jax.utils import atomic

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.cache
def source_digest() -> str:
  """sha256 of every Python file of the package (a code change is a new program)."""
  digest = hashlib.sha256()
  for root, dirs, files in sorted(os.walk(PACKAGE_DIR)):
    dirs.sort()
    for name in sorted(f for f in files if f.endswith(".py")):
      path = os.path.join(root, name)
      digest.update(os.path.relpath(path, PACKAGE_DIR).encode())
      with open(path, "rb") as f:
        digest.update(f.read())
  return digest.hexdigest()


def abstract(tree) -> list:
  """(shape, dtype, sharding) of every leaf of `tree`, with its structure: what a compiled
  program's signature depends on."""
  leaves, treedef = jax.tree.flatten(tree)
  return [str(treedef)] + [(tuple(x.shape), str(x.dtype), str(getattr(x, "sharding", None)))
                           for x in leaves]


def program_key(description) -> str:
  """The file name of a program described by `description` (any repr-able value) on this
  installation and these devices."""
  device = jax.devices()[0]
  parts = (source_digest(), jax.__version__, jaxlib.__version__, device.platform,
           device.client.platform_version, [d.device_kind for d in jax.devices()], description)
  return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def compile_uncached(lowered: jax.stages.Lowered) -> jax.stages.Compiled:
  """`lowered` compiled past XLA's persistent compilation cache: on CPU an executable that
  cache returns serializes to a file that loads but fails to run ("Function ... not found"),
  and the store keeps the program itself anyway. (JAX decides once whether the cache is used:
  `reset_cache` makes it read the flag again.)"""
  enabled = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  compilation_cache.reset_cache()
  try:
    return lowered.compile()
  finally:
    jax.config.update("jax_enable_compilation_cache", enabled)
    compilation_cache.reset_cache()


class ExecutableStore:
  """Serialized executables in `directory`, one file per program key."""

  def __init__(self, directory: str):
    self.directory = os.path.expanduser(directory)
    self.loaded = self.compiled = 0  # counts, for logs and tests

  def path(self, key: str) -> str:
    return os.path.join(self.directory, f"{key}.exe")

  def get(self, description, lower: Callable[[], jax.stages.Lowered]) -> jax.stages.Compiled:
    """The program `description`, loaded from disk, else `lower()` compiled and saved."""
    path = self.path(program_key(description))
    if os.path.exists(path):
      try:
        with open(path, "rb") as f:
          payload, in_tree, out_tree = pickle.load(f)
        compiled = serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
        self.loaded += 1
        return compiled
      except Exception as e:  # noqa: BLE001 - any unreadable file is replaced
        warnings.warn(f"recompiling {path}: cannot load it ({type(e).__name__}: {e})")
    compiled = compile_uncached(lower())
    self.compiled += 1
    try:
      os.makedirs(self.directory, exist_ok=True)
      with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(serialize_executable.serialize(compiled), f)
    except OSError as e:  # the store only saves time: a read-only cache must not stop a run
      warnings.warn(f"compiled program not kept: cannot write {path} ({e.strerror or e})")
    return compiled
