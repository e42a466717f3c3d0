"""The lerp (rectified-flow) schedule of SeedVR/SeedVR2 with v-prediction (the official
`common/diffusion` lerp schedule and v_lerp prediction).

Timesteps are on the official 0..T scale (T = 1000); `t01 = t / T`.
  x_t = (1 - t01) x_0 + t01 noise,   v = noise - x_0,   x_0 = x_t - t01 v,
and an Euler step from t to s is x_s = x_t + (s - t) / T * v.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

T = 1000.0


def _per_sample(t_b: jnp.ndarray, ndim: int) -> jnp.ndarray:
  """(B,) -> (B, 1, ..., 1) on the 0..1 scale, broadcastable against an ndim array."""
  return (jnp.asarray(t_b, jnp.float32) / T).reshape(-1, *(1,) * (ndim - 1))


def add_noise(x0: jnp.ndarray, noise: jnp.ndarray, t_b: jnp.ndarray) -> jnp.ndarray:
  """x_t = (1 - t) x0 + t noise for each sample's t in 0..T."""
  t = _per_sample(t_b, x0.ndim)
  return (1.0 - t) * x0 + t * noise


def velocity(x0: jnp.ndarray, noise: jnp.ndarray) -> jnp.ndarray:
  """The v_lerp target: noise - x0."""
  return noise - x0


def x0_from_v(x_t: jnp.ndarray, v: jnp.ndarray, t_b: jnp.ndarray) -> jnp.ndarray:
  return x_t - _per_sample(t_b, x_t.ndim) * v


def euler_step(x_t: jnp.ndarray, v: jnp.ndarray, t_b: jnp.ndarray,
               s_b: jnp.ndarray) -> jnp.ndarray:
  """x_s = x_t + (s - t) / T * v (s < t steps towards the data)."""
  return x_t + (_per_sample(s_b, x_t.ndim) - _per_sample(t_b, x_t.ndim)) * v


def shift(t01, s):
  """The timestep shift s t / (1 + (s - 1) t) on the 0..1 scale (s = 1: identity)."""
  return s * t01 / (1.0 + (s - 1.0) * t01)


def _line(x1: float, y1: float, x2: float, y2: float):
  m = (y2 - y1) / (x2 - x1)
  return lambda x: m * x + (y1 - m * x1)


_IMAGE_SHIFT = _line(256 * 256, 1.0, 1024 * 1024, 3.2)
_VIDEO_SHIFT = _line(256 * 256 * 37, 1.0, 1280 * 720 * 145, 5.0)


def resolution_shift(frames: int, height: int, width: int) -> float:
  """The official resolution-dependent shift for a clip of `frames` x `height` x `width` pixels
  (linear in pixel count: images 1.0 @ 256^2 -> 3.2 @ 1024^2, videos 1.0 @ 256^2 x 37 -> 5.0
  @ 1280 x 720 x 145)."""
  if frames > 1:
    return float(_VIDEO_SHIFT(height * width * frames))
  return float(_IMAGE_SHIFT(height * width))


def sample_logit_normal(key: jax.Array, batch: int, loc: float = 0.0, scale: float = 1.0,
                        shift_by: float = 1.0) -> jnp.ndarray:
  """Training timesteps (B,) on 0..T: sigmoid(loc + scale * N(0, 1)), then shifted."""
  t01 = jax.nn.sigmoid(loc + scale * jax.random.normal(key, (batch,), jnp.float32))
  return shift(t01, shift_by) * T


def trailing_timesteps(steps: int, shift_by: float = 1.0) -> np.ndarray:
  """The official `uniform_trailing` sampling grid: (steps + 1,) values from T down to 0."""
  t01 = np.arange(steps, 0, -1, dtype=np.float64) / steps
  return np.append(shift(t01, shift_by) * T, 0.0).astype(np.float32)


def guided(pos: jnp.ndarray, neg: jnp.ndarray, scale: float) -> jnp.ndarray:
  """Classifier-free guidance neg + scale (pos - neg) (scale 1: pos)."""
  return pos if scale == 1.0 else neg + scale * (pos - neg)
