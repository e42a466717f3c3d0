"""Adversarial post-training (APT / SeedVR2) losses, float32, weights and sigmas from the caller.

Defaults (SeedVR2 paper, Sec. 3 and 4; APT paper): GAN 1.0; approximate R1 = R2 = 1000 (SeedVR2) with sigma 0.01
for images and 0.1 for videos (APT's values; SeedVR2 does not state its sigma); L1 = feature
matching = 0.1 (the final SeedVR2 model; 1.0 over-smooths); discriminator timestep shift 1 for
images and 12 for videos (APT). The discriminator step scores real and generated samples, and
their sigma-perturbed copies, in one call of 4B samples (`discriminator_step_logits`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

GAN_WEIGHT = 1.0
R1_WEIGHT = R2_WEIGHT = 1000.0
SIGMA_IMAGE, SIGMA_VIDEO = 0.01, 0.1
L1_WEIGHT = FEATURE_MATCHING_WEIGHT = 0.1
TIMESTEP_SHIFT_IMAGE, TIMESTEP_SHIFT_VIDEO = 1.0, 12.0
NUM_TIMESTEPS = 1000.0

LogitsFn = Callable[..., jnp.ndarray]


def rpgan_d_loss(real_logits: jnp.ndarray, fake_logits: jnp.ndarray) -> jnp.ndarray:
  """Relativistic pairing (R3GAN), discriminator: mean_b softplus(D(fake_b) - D(real_b))."""
  return jnp.mean(jax.nn.softplus(fake_logits.astype(jnp.float32)
                                  - real_logits.astype(jnp.float32)))


def rpgan_g_loss(real_logits: jnp.ndarray, fake_logits: jnp.ndarray) -> jnp.ndarray:
  """Relativistic pairing (R3GAN), generator: mean_b softplus(D(real_b) - D(fake_b))."""
  return jnp.mean(jax.nn.softplus(real_logits.astype(jnp.float32)
                                  - fake_logits.astype(jnp.float32)))


def approx_penalty(clean_logits: jnp.ndarray, perturbed_logits: jnp.ndarray) -> jnp.ndarray:
  """mean_b (D(x_b) - D(x_b + sigma eps_b))^2 from precomputed logits (approx R1 / R2).

  For small sigma its expectation is sigma^2 E|grad_x D|^2, the R1 (real x) or R2 (generated x)
  gradient penalty scaled by sigma^2, without a double backward pass."""
  diff = clean_logits.astype(jnp.float32) - perturbed_logits.astype(jnp.float32)
  return jnp.mean(jnp.square(diff))


def perturb(x: jnp.ndarray, sigma: float, key: jax.Array) -> jnp.ndarray:
  """x + sigma * eps, eps ~ N(0, I) (APT's N(x, sigma^2 I))."""
  return x + sigma * jax.random.normal(key, x.shape, jnp.float32).astype(x.dtype)


def approx_r1(d_fn: LogitsFn, real: jnp.ndarray, sigma: float, key: jax.Array) -> jnp.ndarray:
  """Approximate R1 (APT): mean_b (D(x_b) - D(x_b + sigma eps_b))^2 on real samples.
  `d_fn(x) -> (B,) logits` closes over the other discriminator inputs."""
  return approx_penalty(d_fn(real), d_fn(perturb(real, sigma, key)))


def approx_r2(d_fn: LogitsFn, fake: jnp.ndarray, sigma: float, key: jax.Array) -> jnp.ndarray:
  """Approximate R2 (SeedVR2): `approx_r1` on generated samples."""
  return approx_penalty(d_fn(fake), d_fn(perturb(fake, sigma, key)))


def batched_call(fn: Callable, samples: Sequence[jnp.ndarray], *args):
  """fn(concat(samples), *args tiled len(samples) times) split back into one output per sample
  group: one call of n * B samples instead of n calls of B. Every array in `args` (and every
  leaf of fn's output) has the batch axis first; None args pass through."""
  n, batch = len(samples), samples[0].shape[0]
  tiled = jax.tree.map(lambda a: jnp.concatenate([a] * n, axis=0), args)
  out = fn(jnp.concatenate(samples, axis=0), *tiled)
  return [jax.tree.map(lambda o, i=i: o[i * batch:(i + 1) * batch], out) for i in range(n)]


class StepLogits(NamedTuple):
  """(B,) logits of the discriminator step's four sample groups."""

  real: jnp.ndarray
  fake: jnp.ndarray
  real_perturbed: jnp.ndarray
  fake_perturbed: jnp.ndarray


def step_samples(real: jnp.ndarray, fake: jnp.ndarray, sigma: float,
                 key: jax.Array) -> StepLogits:
  """The discriminator step's four sample groups: real, fake, real + sigma eps and
  fake + sigma eps' (a `StepLogits` of samples, in its field order).

  Scored with d_fn = lambda x: D(noise_to_timestep(x, noise, t), cond, txt, t)[0], the clean
  samples are perturbed (R1/R2 of D composed with its input noising); then
    loss = w_gan rpgan_d_loss(real, fake) + w_r1 approx_penalty(real, real_perturbed)
           + w_r2 approx_penalty(fake, fake_perturbed).
  """
  real_key, fake_key = jax.random.split(key)
  return StepLogits(real, fake, perturb(real, sigma, real_key), perturb(fake, sigma, fake_key))


def discriminator_step_logits(d_fn: LogitsFn, real: jnp.ndarray, fake: jnp.ndarray,
                              sigma: float, key: jax.Array, *args) -> StepLogits:
  """The four groups of `step_samples` scored in one call of 4B samples; `d_fn(x, *args)`
  with `args` (condition, text, timestep, noise, ...) tiled, so a sample and its perturbed
  copy, and real_b and fake_b, share them."""
  return StepLogits(*batched_call(d_fn, step_samples(real, fake, sigma, key), *args))


def feature_matching_loss(fake_features: Sequence[jnp.ndarray],
                          real_features: Sequence[jnp.ndarray]) -> jnp.ndarray:
  """mean over layers l of mean |f_fake^l - sg(f_real^l)| (L1; real features are constants)."""
  if len(fake_features) != len(real_features) or not fake_features:
    raise ValueError(f"feature matching needs as many fake as real layers (>= 1), got "
                     f"{len(fake_features)} and {len(real_features)}")
  per_layer = [l1_loss(f, jax.lax.stop_gradient(r)) for f, r in zip(fake_features, real_features)]
  return jnp.mean(jnp.stack(per_layer))


def l1_loss(pred: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """mean |pred - target| in float32."""
  return jnp.mean(jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32)))


def sample_discriminator_timesteps(key: jax.Array, batch: int, shift: float,
                                   num_timesteps: float = NUM_TIMESTEPS) -> jnp.ndarray:
  """APT's timestep ensemble: (B,) t = T shift(u, s), u ~ U(0, 1], shift(u, s) = s u /
  (1 + (s - 1) u); one t per sample, in (0, T] (t = 0 collapses training)."""
  u = 1.0 - jax.random.uniform(key, (batch,), jnp.float32)
  return num_timesteps * shift * u / (1.0 + (shift - 1.0) * u)


def noise_to_timestep(x0: jnp.ndarray, noise: jnp.ndarray, timestep_b: jnp.ndarray,
                      num_timesteps: float = NUM_TIMESTEPS) -> jnp.ndarray:
  """The lerp forward process x_t = (1 - t / T) x0 + (t / T) noise, one t per sample."""
  t = (timestep_b.astype(jnp.float32) / num_timesteps).reshape(-1, *(1,) * (x0.ndim - 1))
  return (1.0 - t) * x0 + t * noise
