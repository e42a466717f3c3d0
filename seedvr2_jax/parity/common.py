"""Shared pieces of the parity checks: fixture files and the error measure."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from seedvr2_jax.errors import FixtureError


@dataclasses.dataclass(frozen=True)
class Check:
  """One compared output: max |err| / max |ref| against a tolerance."""

  name: str
  max_rel_err: float
  tol: float

  @property
  def ok(self) -> bool:
    return bool(np.isfinite(self.max_rel_err)) and self.max_rel_err <= self.tol


def max_rel_err(out, ref) -> float:
  out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
  if out.shape != ref.shape:
    return float("inf")
  return float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30))


class Fixture:
  """A fixture directory: `config.json`, safetensors weights and `.npz` arrays."""

  def __init__(self, path: str):
    self.path = path
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
      raise FixtureError(f"{path}: not a fixture directory (no config.json)")
    with open(config) as f:
      self.config = json.load(f)

  def file(self, name: str) -> str:
    return os.path.join(self.path, name)

  def has(self, *names: str) -> bool:
    return all(os.path.isfile(self.file(n)) for n in names)

  def arrays(self, name: str) -> dict[str, np.ndarray]:
    if not self.has(name):
      raise FixtureError(f"{self.path}: missing {name}")
    with np.load(self.file(name)) as data:
      return dict(data)
