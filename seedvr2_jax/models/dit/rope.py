"""3-D rotary position embeddings of the two official DiT variants (interleaved-pair convention).

Conventions (`rotary_embedding_torch==0.5.3`, as the official code uses): each angle rotates two
adjacent channels (x[2i], x[2i+1]); the per-axis tables are concatenated [T, H, W] and rotate the
first channels of a head; the remaining channels pass through. Angles are computed in float32.

- "mmrope3d" (SeedVR2-3B): integer positions, "lang" frequencies 10000^(-2j/a), a = rope_dim // 3.
  A video token at window-local (t, h, w) of a sample with text length L sits at (L + t, h, w);
  text token j sits at (j, j, j).
- "pixel3d" (SeedVR2-7B): positions linspace(-1, 1, n) over the window extent n of each axis,
  "pixel" frequencies linspace(1, 128, a // 2) * pi with a = (head_dim // 2) // 3. Text gets none.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

ROPE_KINDS = ("mmrope3d", "pixel3d")


def _torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
  """float32 linspace computed the way torch does on CPU (symmetric from both ends)."""
  if steps == 1:
    return np.array([start], np.float32)
  step = np.float32((end - start) / (steps - 1))
  i = np.arange(steps)
  half = steps // 2
  return np.where(i < half, np.float32(start) + step * i.astype(np.float32),
                  np.float32(end) - step * (steps - 1 - i).astype(np.float32)).astype(np.float32)


def lang_freqs(axis_dim: int, theta: float = 10000.0) -> np.ndarray:
  """(axis_dim // 2,) float32 frequencies theta^(-2j/axis_dim)."""
  exponent = np.arange(0, axis_dim, 2)[: axis_dim // 2].astype(np.float32) / np.float32(axis_dim)
  return (np.float32(1.0) / np.power(np.float32(theta), exponent)).astype(np.float32)


def pixel_freqs(axis_dim: int, max_freq: float = 256.0) -> np.ndarray:
  """(axis_dim // 2,) float32 frequencies linspace(1, max_freq / 2) * pi."""
  return (_torch_linspace_f32(1.0, max_freq / 2, axis_dim // 2) * np.float32(math.pi)).astype(
      np.float32)


def rope_freqs(kind: str, head_dim: int, rope_dim: int | None) -> np.ndarray:
  """The per-axis frequency vector, equal to the official `attn.rope.rope.freqs` buffer."""
  if kind == "mmrope3d":
    return lang_freqs(rope_dim // 3)
  if kind == "pixel3d":
    return pixel_freqs((head_dim // 2) // 3)
  raise ValueError(f"unknown rope kind {kind!r}; expected one of {ROPE_KINDS}")


def normalized_positions(local_pos: np.ndarray, extent: np.ndarray) -> np.ndarray:
  """(N, 3) float32 positions linspace(-1, 1, extent)[local] per axis (extent 1 -> -1)."""
  out = np.empty(local_pos.shape, np.float32)
  for n in np.unique(extent):
    table = _torch_linspace_f32(-1.0, 1.0, int(n))
    mask = extent == n
    out[mask] = table[local_pos[mask]]
  return out


def axial_angles(pos_3: jnp.ndarray, freqs: np.ndarray) -> jnp.ndarray:
  """(..., 3) positions -> (..., 3 * F) float32 angles, tables ordered [T, H, W]."""
  angles = pos_3.astype(jnp.float32)[..., :, None] * jnp.asarray(freqs, jnp.float32)
  return angles.reshape(*angles.shape[:-2], -1)


def apply_rope(x: jnp.ndarray, angles: jnp.ndarray) -> jnp.ndarray:
  """Rotates interleaved channel pairs of x (..., d) by angles (..., P); P pairs <= d / 2.

  `angles` broadcasts against x without its last axis (e.g. (B, N, 1, P) for x (B, N, H, d)).
  The computation is float32; the result has x's dtype.
  """
  num_rot = 2 * angles.shape[-1]
  xf = x.astype(jnp.float32)
  rot = xf[..., :num_rot].reshape(*x.shape[:-1], -1, 2)
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  even, odd = rot[..., 0], rot[..., 1]
  rotated = jnp.stack([even * cos - odd * sin, odd * cos + even * sin], axis=-1)
  out = jnp.concatenate([rotated.reshape(*x.shape[:-1], num_rot), xf[..., num_rot:]], axis=-1)
  return out.astype(x.dtype)
