"""The training state of every objective: per trained model its fp32 master parameters,
optimizer state and EMA, the objective's own arrays, the step and the PRNG key; plus shardings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
  params: dict[str, Any]  # {model name: nnx.State of its nnx.Param leaves (float32)}
  opt_state: dict[str, Any]  # {model name: its optimizer's state}
  ema: dict[str, Any]  # {model name: EMA of its parameters}, for the models that keep one
  extras: dict[str, Any]  # the objective's own arrays (distillation: {"teacher": params})
  key: jax.Array  # uint32 raw key data (checkpoint-friendly)


def create(params: Mapping[str, Any], txs: Mapping[str, optax.GradientTransformation],
           seed: int, *, ema: Sequence[str] = (), extras: Mapping[str, Any] | None = None
           ) -> TrainState:
  """A fresh state at step 0 around `params` (copied for the EMA of the models in `ema`)."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=dict(params),
                    opt_state={name: txs[name].init(p) for name, p in params.items()},
                    ema={name: jax.tree.map(jnp.copy, params[name]) for name in ema},
                    extras=dict(extras or {}),
                    key=jax.random.key_data(jax.random.key(seed)))


def shardings(abstract: TrainState, params_shardings: Mapping[str, Any],
              txs: Mapping[str, optax.GradientTransformation], extras: Mapping[str, Any],
              mesh) -> TrainState:
  """Shardings for every leaf: a model's parameters, EMA and optimizer moments follow its
  `params_shardings` entry; counts, the step and the key are replicated; `extras` as given."""
  rep = sharding.replicated(mesh)
  return TrainState(
      step=rep, params=dict(params_shardings),
      opt_state={name: optimizer_shardings(txs[name], abstract.opt_state[name],
                                           params_shardings[name], rep)
                 for name in abstract.opt_state},
      ema={name: params_shardings[name] for name in abstract.ema}, extras=dict(extras),
      key=rep)


def optimizer_shardings(tx: optax.GradientTransformation, abstract_opt_state, params_sharding,
                        replicated):
  """Parameter-shaped optimizer leaves (moments) follow `params_sharding`; counts and other
  non-parameter leaves get `replicated`."""
  return optax.tree_map_params(tx, lambda _, s: s, abstract_opt_state, params_sharding,
                               transform_non_params=lambda _: replicated)


def split_model(model: nnx.Module):
  """(graphdef, params, rest): trainable nnx.Param leaves and everything else (buffers)."""
  return nnx.split(model, nnx.Param, ...)
