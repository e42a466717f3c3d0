"""Reconstruction training of the causal video VAE (SeedVR trains its VAE with L1 + LPIPS + GAN,
spec/paper_facts.md; we keep L1 + LPIPS and a small KL, enough for a small VAE in minutes):

  loss = l1 mean|x - x'| + lpips mean_frames LPIPS(x, x') + kl mean KL(q(z|x) || N(0, I))
  x' = decode(z), z ~ q(z|x) the posterior sample; pixels in [-1, 1], LPIPS frame by frame.

`fit` runs the jitted step over a batch iterator of HQ clips {"hq": (B, T, H, W, 3) uint8}
(T = 4n + 1 or 1) and returns the trained model; `latent_std` gives the scaling factor that
makes the DiT's latents unit-variance (as Stable Diffusion chose its 0.18215).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from seedvr2_jax.diffusion import condition
from seedvr2_jax.models.vae import codec
from seedvr2_jax.models.vae.autoencoder import VideoAutoencoder


@dataclasses.dataclass(frozen=True)
class VAELossConfig:
  l1: float = 1.0
  lpips: float = 0.5
  kl: float = 1e-6


@flax.struct.dataclass
class VAEState:
  step: jax.Array  # int32 scalar
  params: object  # the VAE's nnx.Param leaves (float32)
  opt_state: object
  key: jax.Array  # uint32 raw key data


def kl_to_standard_normal(mean, logvar) -> jnp.ndarray:
  """Mean over elements of KL(N(mean, exp(logvar)) || N(0, 1))."""
  return 0.5 * jnp.mean(mean ** 2 + jnp.exp(logvar) - 1.0 - logvar)


def reconstruction_loss(vae: VideoAutoencoder, x_bthwc, key, cfg: VAELossConfig,
                        perceptual: Callable | None):
  """(loss, metrics) for pixels in [-1, 1]; `perceptual(x, y)` maps (N, H, W, 3) images in
  [0, 1] to (N,) distances (metrics/lpips.py), required when cfg.lpips > 0."""
  mean, logvar = codec.split_moments(codec.encode(vae, x_bthwc))
  z = codec.sample_posterior(mean, logvar, key=key)
  recon = codec.decode(vae, z).astype(jnp.float32)
  l1 = jnp.mean(jnp.abs(recon - x_bthwc))
  kl = kl_to_standard_normal(mean, logvar)
  metrics = {"l1": l1, "kl": kl}
  loss = cfg.l1 * l1 + cfg.kl * kl
  if cfg.lpips:
    frames = lambda v: (v.reshape(-1, *v.shape[2:]) + 1.0) * 0.5
    lp = jnp.mean(perceptual(frames(recon.clip(-1, 1)), frames(x_bthwc)))
    metrics["lpips"] = lp
    loss = loss + cfg.lpips * lp
  mse = jnp.mean(((recon.clip(-1, 1) - x_bthwc) * 0.5) ** 2)
  metrics["psnr"] = -10.0 * jnp.log10(mse)
  return loss, metrics


def make_step(graphdef, rest, tx: optax.GradientTransformation, cfg: VAELossConfig,
              perceptual: Callable | None):
  """step(state, hq uint8 (B, T, H, W, 3)) -> (state, metrics), jitted, state donated."""

  def step(state: VAEState, hq):
    key, sample_key = jax.random.split(jax.random.wrap_key_data(state.key))

    def loss_fn(params):
      vae = nnx.merge(graphdef, params, rest)
      return reconstruction_loss(vae, condition.to_unit(hq), sample_key, cfg, perceptual)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, **metrics, "grad_norm": optax.tree.norm(grads)}
    return VAEState(state.step + 1, params, opt_state, jax.random.key_data(key)), metrics

  return jax.jit(step, donate_argnums=0)


def fit(vae: VideoAutoencoder, batches: Iterator[dict], *, steps: int,
        tx: optax.GradientTransformation, cfg: VAELossConfig, perceptual: Callable | None,
        seed: int = 0, log_every: int = 50, write=None) -> VideoAutoencoder:
  """Trains `vae` for `steps` batches; `write(step, metrics)` is called every `log_every`."""
  graphdef, params, rest = nnx.split(vae, nnx.Param, ...)
  state = VAEState(jnp.zeros((), jnp.int32), params, tx.init(params),
                   jax.random.key_data(jax.random.key(seed)))
  step_fn = make_step(graphdef, rest, tx, cfg, perceptual)
  for i in range(1, steps + 1):
    state, metrics = step_fn(state, jnp.asarray(next(batches)["hq"]))
    if write is not None and (i % log_every == 0 or i == steps):
      write(i, {k: float(v) for k, v in metrics.items()})
  return nnx.merge(graphdef, state.params, rest)


def latent_std(vae: VideoAutoencoder, batches: Iterator[dict], count: int) -> float:
  """Standard deviation of the posterior means over `count` batches of HQ clips."""
  encode = jax.jit(lambda x: codec.split_moments(codec.encode(vae, condition.to_unit(x)))[0])
  means = [np.asarray(encode(jnp.asarray(next(batches)["hq"]))) for _ in range(count)]
  return float(np.std(np.concatenate([m.ravel() for m in means])))
