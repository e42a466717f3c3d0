"""Loads `configs/*.py` files: `path/to/config.py[:arg]` -> get_config(arg)."""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from seedvr2_jax.errors import ConfigError


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Imports the config file and calls its `get_config(arg)` (arg after ':' or None)."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path} does not exist")
  module_spec = importlib.util.spec_from_file_location(
      f"seedvr2_config_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path} has no get_config(arg) function")
  try:
    return module.get_config(arg or None)
  except (ValueError, KeyError) as e:
    raise ConfigError(f"{spec}: {e}") from None
