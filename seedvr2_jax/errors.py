"""Errors caused by user input. The CLI prints their message as one line and exits non-zero."""


class SeedVR2Error(ValueError):
  """Bad input; the message names the file, key or value at fault."""


class CheckpointError(SeedVR2Error):
  """A checkpoint file or state_dict cannot be used (missing, corrupt or mismatched)."""


class ConfigError(SeedVR2Error):
  """A config file or value is invalid (unknown key, unsupported value)."""


class FixtureError(SeedVR2Error):
  """A parity fixture directory lacks a required file or component."""


class InputError(SeedVR2Error):
  """Input media or arrays have an unusable shape, size or frame count."""


class DistributedError(SeedVR2Error):
  """A multi-process run cannot start (no launcher detected, coordinator unreachable)."""
