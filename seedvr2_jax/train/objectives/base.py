"""What an objective of the training loop declares: the models it trains (each with its
optimizer, EMA, metric prefix), the frozen inputs of its step, how a data batch becomes the
step's inputs, its loss and gradients, its phases (e.g. distillation rounds), its FLOPs, and the
inference checkpoint its state exports to. The loop (train/loop.py) gives every objective the
same sharding, update (train/step.py), Orbax resume, preemption handling and logging."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Hashable
from typing import Any, ClassVar

import jax
import ml_collections
import optax

from seedvr2_jax.convert import bundle as bundle_lib
from seedvr2_jax.train import optim
from seedvr2_jax.train.start import Model
from seedvr2_jax.train.state import TrainState


@dataclasses.dataclass
class Trained:
  """A model an objective trains: its split model, optimizer and learning-rate schedule, whether
  it keeps an EMA, and the prefix of its logged metrics (`grad_norm`, `learning_rate`)."""

  model: Model
  tx: optax.GradientTransformation
  learning_rate: optax.Schedule
  ema: bool = False
  metric_prefix: str = ""


def trained(model: Model, optim_cfg: ml_collections.ConfigDict, total_steps: int,
            **kwargs) -> Trained:
  """`model` with the optimizer of `optim_cfg` (train/optim.py)."""
  return Trained(model, optim.make(optim_cfg, total_steps),
                 optim.learning_rate(optim_cfg, total_steps), **kwargs)


@dataclasses.dataclass(frozen=True)
class Throughput:
  """What one step processes: samples, tokens (latent patches; 0 where none) and model FLOPs."""

  samples: int
  tokens: int
  flops: float


class Objective(abc.ABC):
  """A training objective. `build` must run first: it sets `trained` and returns the frozen
  inputs of the step (placed replicated by the loop)."""

  name: ClassVar[str]

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, *,
               abstract: bool = False):
    """`abstract`: `build` makes shapes (jax.ShapeDtypeStruct) instead of arrays."""
    self.config, self.mesh, self.abstract = config, mesh, abstract
    self.trained: dict[str, Trained] = {}

  @abc.abstractmethod
  def build(self) -> dict:
    """Makes the trained models (`self.trained`); returns the frozen inputs."""

  def extras(self) -> tuple[dict, dict]:
    """(initial extras of the state, their shardings): arrays the objective keeps besides the
    trained models' parameters, saved with every checkpoint."""
    return {}, {}

  @abc.abstractmethod
  def prepare(self, frozen: dict, batch: dict, key: jax.Array) -> dict:
    """A data batch (global arrays) -> the inputs of `loss_and_grads`, inside the step."""

  @abc.abstractmethod
  def loss_and_grads(self, state: TrainState, frozen: dict, inputs: dict, key: jax.Array,
                     phase: Hashable) -> tuple[dict[str, jax.Array], dict[str, Any]]:
    """(scalar metrics with at least "loss", {trained model name: gradients})."""

  def phase(self, step: int) -> Hashable:
    """The phase of step `step` (0-based): a new phase gets its own compiled step and, from the
    second phase on, `enter_phase` before its first step."""
    return None

  def enter_phase(self, state: TrainState, phase: Hashable) -> tuple[TrainState, str]:
    """(state for `phase`, a line for the log)."""
    return state, ""

  @abc.abstractmethod
  def throughput(self, batch: dict, phase: Hashable) -> Throughput:
    """Samples, tokens and model FLOPs of one step on `batch` (shapes only)."""

  @abc.abstractmethod
  def to_bundle(self, state: TrainState, frozen: dict, *, ema: bool) -> bundle_lib.Bundle:
    """The inference checkpoint (DiT, VAE, texts) of `state` (EMA parameters where kept and
    `ema`)."""

  def params_for_export(self, state: TrainState, name: str, *, ema: bool):
    """A trained model's EMA (when kept and `ema`) or raw parameters."""
    return state.ema[name] if ema and name in state.ema else state.params[name]
