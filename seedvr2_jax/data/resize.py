"""Resizing of (..., H, W) float32 arrays (the last two axes) as torch `F.interpolate`
(align_corners=False, no antialiasing, as Real-ESRGAN calls it): "area" (adaptive average
pooling), "bilinear", "bicubic" (Keys, a = -0.75, borders clamped). Each axis is a weighted sum of
a few gathered rows or columns.
"""

from __future__ import annotations

import numpy as np

RESIZE_MODES = ("area", "bilinear", "bicubic")


def _cubic(d: np.ndarray, a: float = -0.75) -> np.ndarray:
  """Keys' cubic convolution weight at distance |d| <= 2."""
  d = np.abs(d)
  near = ((a + 2) * d - (a + 3)) * d * d + 1
  far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
  return np.where(d <= 1, near, far)


def taps(in_size: int, out_size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
  """(out_size, taps) source indices and weights (each row sums to one) along one axis."""
  scale = in_size / out_size
  i = np.arange(out_size, dtype=np.float64)
  if mode == "area":
    start = np.floor(i * scale).astype(np.int64)
    end = np.ceil((i + 1) * scale).astype(np.int64)
    index = start[:, None] + np.arange(int((end - start).max()))
    weight = (index < end[:, None]) / (end - start)[:, None]
  elif mode == "bilinear":
    src = np.maximum((i + 0.5) * scale - 0.5, 0.0)
    first = np.floor(src)
    index = first[:, None].astype(np.int64) + np.arange(2)
    frac = (src - first)[:, None]
    weight = np.concatenate([1 - frac, frac], axis=1)
  elif mode == "bicubic":
    src = (i + 0.5) * scale - 0.5
    first = np.floor(src)
    index = first[:, None].astype(np.int64) + np.arange(-1, 3)
    weight = _cubic(src[:, None] - index)
  else:
    raise ValueError(f"unknown resize mode {mode!r} (expected one of {RESIZE_MODES})")
  return np.clip(index, 0, in_size - 1), weight.astype(np.float32)


def _resize_axis(x: np.ndarray, out_size: int, axis: int, mode: str) -> np.ndarray:
  if x.shape[axis] == out_size:
    return x
  index, weight = taps(x.shape[axis], out_size, mode)
  shape = [1] * x.ndim
  shape[axis] = out_size  # weights broadcast along every other axis
  out = np.take(x, index[:, 0], axis=axis)
  out *= weight[:, 0].reshape(shape)
  for k in range(1, index.shape[1]):
    out += np.take(x, index[:, k], axis=axis) * weight[:, k].reshape(shape)
  return out


def resize(x: np.ndarray, out_hw: tuple[int, int], mode: str) -> np.ndarray:
  """(..., H, W) float32 -> (..., out_h, out_w) float32."""
  h, w = out_hw
  # The axis that shrinks more goes first, so the second pass runs on fewer pixels.
  if h / x.shape[-2] <= w / x.shape[-1]:
    return _resize_axis(_resize_axis(x, h, -2, mode), w, -1, mode)
  return _resize_axis(_resize_axis(x, w, -1, mode), h, -2, mode)
