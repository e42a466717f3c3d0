"""Loads `configs/*.py` files: `path/to/config.py[:arg]` -> get_config(arg)."""

from __future__ import annotations

import ast
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


def apply_overrides(config: ml_collections.ConfigDict,
                    args: list[str]) -> ml_collections.ConfigDict:
  """Applies `--config.a.b=value` arguments (values parsed as Python literals, else strings);
  unknown fields or values of the wrong type are ConfigErrors."""
  for arg in args:
    name, sep, text = arg.partition("=")
    if not name.startswith("--config.") or not sep:
      raise ConfigError(f"unrecognized argument {arg!r} (overrides look like --config.a.b=1)")
    path = name[len("--config."):]
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *parents, leaf = path.split(".")
    node = config
    try:
      for part in parents:
        node = node[part]
      if leaf not in node:
        raise KeyError(leaf)
      node[leaf] = value
    except KeyError:
      raise ConfigError(f"unknown config field {path!r}") from None
    except TypeError as e:
      raise ConfigError(f"config field {path}: {e}") from None
  return config
