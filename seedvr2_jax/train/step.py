"""The one training step of every objective, a pure function (TrainState, batch, frozen) ->
(TrainState, metrics) with explicit shardings and the state donated:

  batch -> `objective.prepare` (e.g. frozen VAE -> latents) -> microbatches
  -> `objective.loss_and_grads` (summed under lax.scan) -> `update`: per model its optimizer
  (clipping inside), EMA, the step and key; a step with any non-finite metric or gradient norm
  leaves the whole state unchanged, so a checkpoint is never written from a poisoned step.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

from seedvr2_jax.parallel import mesh as mesh_lib
from seedvr2_jax.train.state import TrainState


def _microbatches(batch: dict, count: int) -> dict:
  """(B, ...) leaves -> (count, B / count, ...)."""
  return jax.tree.map(lambda x: x.reshape(count, x.shape[0] // count, *x.shape[1:]), batch)


def update(state: TrainState, grads: Mapping, txs: Mapping, *, ema_decay: float,
           key: jax.Array, metrics: Mapping) -> tuple[TrainState, dict, jax.Array]:
  """Applies each model's gradients with its optimizer, updates the EMAs, advances the step and
  key. Returns (new state or `state` unchanged, {model: gradient norm}, finite)."""
  params, opt_state, norms = {}, {}, {}
  for name, model_grads in grads.items():
    updates, opt_state[name] = txs[name].update(model_grads, state.opt_state[name],
                                                state.params[name])
    params[name] = optax.apply_updates(state.params[name], updates)
    norms[name] = optax.tree.norm(model_grads)
  ema = {name: jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, old,
                            params[name]) for name, old in state.ema.items()}
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v))
                              for v in (*metrics.values(), *norms.values())]))
  new = state.replace(step=state.step + 1, params={**state.params, **params},
                      opt_state={**state.opt_state, **opt_state}, ema=ema,
                      key=jax.random.key_data(key))
  return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state), norms, finite


def make_step(objective, phase, *, ema_decay: float, accum_steps: int = 1):
  """step(state, batch, frozen) -> (state, metrics) of `objective` in `phase`."""
  txs = {name: model.tx for name, model in objective.trained.items()}

  def step(state: TrainState, batch: dict, frozen: dict):
    key, prep_key, loss_key = jax.random.split(jax.random.wrap_key_data(state.key), 3)
    inputs = objective.prepare(frozen, batch, prep_key)
    grads_of = lambda micro, micro_key: objective.loss_and_grads(state, frozen, micro,
                                                                 micro_key, phase)
    if accum_steps == 1:
      metrics, grads = grads_of(inputs, loss_key)
    else:
      micro = _microbatches(inputs, accum_steps)
      keys = jax.random.split(loss_key, accum_steps)
      shapes = jax.eval_shape(grads_of, jax.tree.map(lambda x: x[0], micro), keys[0])
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
      summed, _ = jax.lax.scan(
          lambda acc, xs: (jax.tree.map(jnp.add, acc, grads_of(*xs)), None), zeros,
          (micro, keys))
      metrics, grads = jax.tree.map(lambda x: x / accum_steps, summed)
    new, norms, finite = update(state, grads, txs, ema_decay=ema_decay, key=key,
                                metrics=metrics)
    for name, model in objective.trained.items():
      metrics[f"{model.metric_prefix}grad_norm"] = norms[name]
      metrics[f"{model.metric_prefix}learning_rate"] = model.learning_rate(state.step)
    return new, {**metrics, "finite": finite}

  return step


def jit_step(step, state_sharding, batch_sharding, frozen_sharding, metrics_sharding):
  """jax.jit with explicit in/out shardings; the incoming state's buffers are donated; traced
  with the mesh as context (splash attention's shard_map)."""
  step = mesh_lib.traced_with_mesh(step, metrics_sharding.mesh)
  return jax.jit(step, in_shardings=(state_sharding, batch_sharding, frozen_sharding),
                 out_shardings=(state_sharding, metrics_sharding), donate_argnums=(0,))
