"""The training state: a pytree of fp32 master parameters, optimizer state, EMA, the frozen
distillation teacher and the step's random key, plus its shardings on a mesh."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from seedvr2_jax.models.dit.block import NaMMSRTransformerBlock
from seedvr2_jax.models.dit.config import NaDiTConfig
from seedvr2_jax.models.dit.nadit import NaDiT
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


def random_split(cfg: NaDiTConfig, seed: int, params_sharding, rest_sharding):
  """(params, rest) of a randomly initialised NaDiT, placed with the given shardings.

  One compiled program per distinct block graph (4 for the official 3B, 2 for the 7B) makes
  every block from its own key, and one more the layers around them: XLA's compile time grows
  with the program, and the whole model's initialisation in one program took 205 s to compile
  on an H200 for the 3B (91 s on a 2-core CPU for a 32-block model of width 64)."""
  keys = jax.random.split(jax.random.key(seed), cfg.num_layers + 1)
  abstract = nnx.eval_shape(lambda: NaDiT(cfg, nnx.Rngs(0)))
  graphdefs = [nnx.graphdef(block) for block in abstract.blocks]
  first_of = {}
  for i, graphdef in enumerate(graphdefs):
    first_of.setdefault(graphdef, i)
  inits = {}
  states = []
  for i, graphdef in enumerate(graphdefs):
    layer = first_of[graphdef]
    if layer not in inits:
      make = lambda key, layer=layer: split_model(NaMMSRTransformerBlock(
          cfg, layer, nnx.Rngs(key)))[1:]
      inits[layer] = jax.jit(make, out_shardings=tuple(
          tree["blocks"][i] if "blocks" in tree and i in tree["blocks"] else None
          for tree in (params_sharding, rest_sharding)))  # a block without buffers: no rest
    states.append(inits[layer](keys[i]))

  def assemble(key, states):
    blocks = [nnx.merge(graphdef, *state) for graphdef, state in zip(graphdefs, states)]
    return split_model(NaDiT(cfg, nnx.Rngs(key), blocks))[1:]

  return jax.jit(assemble, out_shardings=(params_sharding, rest_sharding),
                 donate_argnums=1)(keys[-1], states)
