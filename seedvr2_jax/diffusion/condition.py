"""The super-resolution condition of SeedVR/SeedVR2 (the official inference
pipeline's `get_condition`).

The DiT's 33 input channels are [x_t 0:16 | LQ latent 16:32 | mask 1.0 at 32]. Training may
noise the LQ latent to a small timestep (SeedVR's condition noise augmentation; 0 in SeedVR2
inference, where the condition is the LQ latent exactly).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seedvr2_jax.diffusion import schedule


def to_unit(pixels_bthwc: jnp.ndarray) -> jnp.ndarray:
  """uint8 pixels -> float32 in [-1, 1]."""
  return pixels_bthwc.astype(jnp.float32) / 127.5 - 1.0


def lq_pixels_at(lq_bthwc: jnp.ndarray, hq_shape: tuple[int, ...]) -> jnp.ndarray:
  """[-1, 1] LQ clip -> the HQ size (bicubic, antialiased, clipped), as inference resizes its
  input to the output size before encoding; unchanged when the sizes already match."""
  if tuple(lq_bthwc.shape) == tuple(hq_shape):
    return lq_bthwc
  return jax.image.resize(lq_bthwc, hq_shape, "cubic", antialias=True).clip(-1.0, 1.0)


def sr_condition(lq_latent: jnp.ndarray) -> jnp.ndarray:
  """(B, T, h, w, C) LQ latent -> (B, T, h, w, C + 1) condition [latent | ones]."""
  return jnp.concatenate([lq_latent, jnp.ones_like(lq_latent[..., :1])], axis=-1)


def model_input(x_t: jnp.ndarray, condition: jnp.ndarray) -> jnp.ndarray:
  """[x_t | condition] along channels: the DiT's video input."""
  return jnp.concatenate([x_t, condition.astype(x_t.dtype)], axis=-1)


def augment(lq_latent: jnp.ndarray, key: jax.Array, max_t: float,
            shift_by: float = 1.0) -> jnp.ndarray:
  """Noises each sample's LQ latent to t ~ U[0, max_t] (0..T scale, then shifted)."""
  if max_t <= 0:
    return lq_latent
  t_key, noise_key = jax.random.split(key)
  t01 = jax.random.uniform(t_key, (lq_latent.shape[0],), jnp.float32, 0.0, max_t / schedule.T)
  noise = jax.random.normal(noise_key, lq_latent.shape, jnp.float32)
  return schedule.add_noise(lq_latent, noise, schedule.shift(t01, shift_by) * schedule.T)
