"""The training objectives (`config.objective` -> class); each is a plug-in of train/loop.py."""

from __future__ import annotations

from seedvr2_jax.errors import ConfigError
from seedvr2_jax.train.objectives.apt import APT
from seedvr2_jax.train.objectives.base import Objective
from seedvr2_jax.train.objectives.diffusion import Diffusion, Regression
from seedvr2_jax.train.objectives.distill import Distillation
from seedvr2_jax.train.objectives.vae import VAEReconstruction

OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (Diffusion, Distillation, Regression, APT, VAEReconstruction)}


def make(config, mesh, *, abstract: bool = False) -> Objective:
  """The objective `config.objective` of a run on `mesh` (not built yet; `abstract`: its
  `build` makes shapes only)."""
  if config.objective not in OBJECTIVES:
    raise ConfigError(f"unknown objective {config.objective!r}; expected one of "
                      f"{tuple(OBJECTIVES)}")
  return OBJECTIVES[config.objective](config, mesh, abstract=abstract)
