"""Loads `configs/*.py` files (`path/to/config.py[:arg]` -> get_config(arg)) and applies
command-line overrides (`--config.a.b=value`, ml_collections' config_flags semantics)."""

from __future__ import annotations

import importlib.util
import os
import types

import ml_collections
from absl import flags
from ml_collections import config_flags

from seedvr2_jax.errors import ConfigError


def config_module(path: str) -> types.ModuleType:
  """The config file at `path`, imported (config files may share functions this way)."""
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path} does not exist")
  module_spec = importlib.util.spec_from_file_location(
      f"seedvr2_config_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Imports the config file and calls its `get_config(arg)` (arg after ':' or None)."""
  path, _, arg = spec.partition(":")
  module = config_module(path)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path} has no get_config(arg) function")
  try:
    return module.get_config(arg or None)
  except (ValueError, KeyError) as e:
    raise ConfigError(f"{spec}: {e}") from None


def override(config: ml_collections.ConfigDict,
             args: list[str]) -> ml_collections.ConfigDict:
  """Applies `--config.a.b=value` arguments with ml_collections' `config_flags` (values parsed
  by the field's type; tuples as Python literals); the config comes back locked. An unknown
  field, a value of the wrong type or another argument is a ConfigError."""
  for arg in args:
    name, sep, _ = arg.partition("=")
    if not name.startswith("--config.") or not sep:
      raise ConfigError(f"unrecognized argument {arg!r} (overrides look like --config.a.b=1)")
    node, path = config, name[len("--config."):]
    for part in path.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise ConfigError(f"unknown config field {path!r}")
      node = node[part]
  config.lock()
  values = flags.FlagValues()
  argv = ["seedvr2-jax", *args]
  config_flags.DEFINE_config_dict("config", config, flag_values=values, sys_argv=argv)
  try:
    values(argv)
  except flags.Error as e:
    raise ConfigError(str(e).splitlines()[0]) from None
  return values.config


def load_with_overrides(spec: str, args: list[str]) -> ml_collections.ConfigDict:
  """`load_config(spec)` with `override(args)`: what `train` and `export-run` read."""
  return override(load_config(spec), args)
