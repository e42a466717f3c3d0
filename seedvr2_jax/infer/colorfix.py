"""Colour correction of the restored frames against the (pre-processed) LQ input.

`wavelet`: the official choice (StableSR `wavelet_reconstruction`): the restored frames' high
frequencies plus the input's low frequencies, from a 5-level dilated 3x3 [1,2,1]^T[1,2,1]/16
blur with replicate padding. `adain`: per frame and channel, the restored frames' mean/std are
replaced by the input's (StableSR `adain_color_fix`, unbiased std + 1e-5).
Frames are (T, H, W, C) in [-1, 1].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from seedvr2_jax.infer.options import COLORFIX_MODES

_KERNEL = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], np.float32) / 16.0


def _blur(x: jnp.ndarray, radius: int) -> jnp.ndarray:
  """Depthwise 3x3 blur dilated by `radius`, replicate padding, on (T, H, W, C)."""
  c = x.shape[-1]
  padded = jnp.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
  kernel = jnp.tile(jnp.asarray(_KERNEL)[:, :, None, None], (1, 1, 1, c)).astype(x.dtype)
  return jax.lax.conv_general_dilated(
      padded, kernel, (1, 1), "VALID", rhs_dilation=(radius, radius),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c,
      precision=jax.lax.Precision.HIGHEST)


def _decompose(x: jnp.ndarray, levels: int = 5):
  high = jnp.zeros_like(x)
  for i in range(levels):
    low = _blur(x, 2 ** i)
    high = high + (x - low)
    x = low
  return high, x


def wavelet_reconstruction(content: jnp.ndarray, style: jnp.ndarray) -> jnp.ndarray:
  return _decompose(content)[0] + _decompose(style)[1]


def adain(content: jnp.ndarray, style: jnp.ndarray, eps: float = 1e-5) -> jnp.ndarray:
  def stats(x):
    n = x.shape[1] * x.shape[2]
    mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    var = jnp.sum(jnp.square(x - mean), axis=(1, 2), keepdims=True) / (n - 1)
    return mean, jnp.sqrt(var + eps)
  c_mean, c_std = stats(content)
  s_mean, s_std = stats(style)
  return (content - c_mean) / c_std * s_std + s_mean


def color_fix(restored: jnp.ndarray, lq: jnp.ndarray, mode: str) -> jnp.ndarray:
  if mode == "wavelet":
    return wavelet_reconstruction(restored, lq)
  if mode == "adain":
    return adain(restored, lq)
  if mode == "none":
    return restored
  raise ValueError(f"unknown colour fix {mode!r}; expected one of {COLORFIX_MODES}")
