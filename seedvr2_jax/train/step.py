"""The jitted training step: a pure function of (TrainState, batch, frozen) -> (TrainState,
metrics), with explicit shardings and the state donated.

  batch (host data, global arrays) -> latents (`prepare`: frozen VAE, text) -> microbatches
  -> loss and gradients (summed under lax.scan) -> clipped AdamW update -> EMA
A step whose loss or gradient norm is not finite leaves the state unchanged (the loop then
stops with the last good state), so a checkpoint is never written from a poisoned step.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from seedvr2_jax.train.state import TrainState

# loss_fn(model, teacher_model_or_None, latent_batch, key) -> (scalar loss, metrics dict)
LossFn = Callable[[nnx.Module, nnx.Module | None, dict, jax.Array], tuple[jax.Array, dict]]


def _microbatches(batch: dict, count: int) -> dict:
  """(B, ...) leaves -> (count, B / count, ...)."""
  return jax.tree.map(lambda x: x.reshape(count, x.shape[0] // count, *x.shape[1:]), batch)


def make_step(graphdef, rest, tx: optax.GradientTransformation, loss_fn: LossFn,
              prepare: Callable[[dict, dict, jax.Array], dict], *, ema_decay: float,
              accum_steps: int = 1, learning_rate: optax.Schedule | None = None):
  """Returns step(state, batch, frozen) -> (state, metrics); `prepare(frozen, batch, key)`
  turns a data batch into the latent batch the loss reads."""

  def step(state: TrainState, batch: dict, frozen: dict):
    key = jax.random.wrap_key_data(state.key)
    key, prep_key, loss_key = jax.random.split(key, 3)
    latents = prepare(frozen, batch, prep_key)
    teacher = None if state.teacher is None else nnx.merge(graphdef, state.teacher, rest)

    def loss_of(params, micro, micro_key):
      return loss_fn(nnx.merge(graphdef, params, rest), teacher, micro, micro_key)

    grad_fn = jax.value_and_grad(loss_of, has_aux=True)
    if accum_steps == 1:
      (loss, aux), grads = grad_fn(state.params, latents, loss_key)
    else:
      micro = _microbatches(latents, accum_steps)
      keys = jax.random.split(loss_key, accum_steps)
      shapes = jax.eval_shape(grad_fn, state.params, jax.tree.map(lambda x: x[0], micro), keys[0])
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

      def body(acc, xs):
        return jax.tree.map(jnp.add, acc, grad_fn(state.params, *xs)), None

      summed, _ = jax.lax.scan(body, zeros, (micro, keys))
      (loss, aux), grads = jax.tree.map(lambda x: x / accum_steps, summed)

    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema
    if ema is not None:
      ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema=ema,
                        key=jax.random.key_data(key))
    new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
    metrics = {**aux, "loss": loss, "grad_norm": grad_norm, "finite": finite}
    if learning_rate is not None:
      metrics["learning_rate"] = learning_rate(state.step)
    return new, metrics

  return step


def jit_step(step, state_sharding, batch_sharding, frozen_sharding, metrics_sharding):
  """jax.jit with explicit in/out shardings; the incoming state's buffers are donated."""
  return jax.jit(step, in_shardings=(state_sharding, batch_sharding, frozen_sharding),
                 out_shardings=(state_sharding, metrics_sharding), donate_argnums=(0,))
