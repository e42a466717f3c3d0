"""The training state: a pytree of fp32 master parameters, optimizer state, EMA, the frozen
distillation teacher and the step's random key, plus its shardings on a mesh."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from seedvr2_jax.parallel import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar
  params: Any  # nnx.State of the trained model's nnx.Param leaves (float32)
  opt_state: Any
  ema: Any  # like params, or None
  teacher: Any  # like params (distillation), or None
  key: jax.Array  # uint32 raw key data (checkpoint-friendly)


def create(params, tx: optax.GradientTransformation, seed: int, *, ema: bool,
           teacher=None) -> TrainState:
  """A fresh state at step 0 around `params` (copied for EMA and teacher when used)."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    ema=jax.tree.map(jnp.copy, params) if ema else None, teacher=teacher,
                    key=jax.random.key_data(jax.random.key(seed)))


def shardings(abstract: TrainState, params_sharding, tx: optax.GradientTransformation,
              mesh) -> TrainState:
  """Shardings for every leaf: parameter-shaped trees (params, EMA, teacher, Adam moments)
  follow `params_sharding`; counts, the step and the key are replicated."""
  rep = sharding.replicated(mesh)
  opt = optimizer_shardings(tx, abstract.opt_state, params_sharding, rep)
  like_params = lambda tree: None if tree is None else params_sharding
  return TrainState(step=rep, params=params_sharding, opt_state=opt,
                    ema=like_params(abstract.ema), teacher=like_params(abstract.teacher), key=rep)


def optimizer_shardings(tx: optax.GradientTransformation, abstract_opt_state, params_sharding,
                        replicated):
  """Parameter-shaped optimizer leaves (moments) follow `params_sharding`; counts and other
  non-parameter leaves get `replicated`."""
  return optax.tree_map_params(tx, lambda _, s: s, abstract_opt_state, params_sharding,
                               transform_non_params=lambda _: replicated)


def split_model(model: nnx.Module):
  """(graphdef, params, rest): trainable nnx.Param leaves and everything else (buffers)."""
  return nnx.split(model, nnx.Param, ...)
