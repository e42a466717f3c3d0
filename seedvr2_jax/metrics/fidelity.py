"""PSNR and SSIM of RGB images in [0, 1], one value per image.

Images are (..., H, W, 3) float arrays in [0, 1]; the leading axes (frames, batch) are kept, so a
(T, H, W, 3) video gives (T,) values to average.

PSNR: 10 log10(1 / MSE), the MSE over all H*W*3 RGB values, data range 1, no colour conversion
and no rounding (pyiqa's `psnr` and `skimage.metrics.peak_signal_noise_ratio(data_range=1)` on
RGB). Identical images give +inf.

SSIM (Wang et al. 2004), normalised 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
'valid' filtering (no padding), mean of the SSIM map, no downsampling, in two conventions:
- `ssim`: IQA-PyTorch's (pyiqa) default `ssim`, the convention of the SR/VR literature's tools:
  Y = round(255 (0.299 R + 0.587 G + 0.114 B)) (full-range luma of YIQ, rounded like MATLAB's
  uint8 path), data range 255, the contrast-structure map clipped at 0 (pyiqa's ReLU).
- `ssim_bt601`: BT.601 luma in studio range, as BasicSR `calculate_ssim(test_y_channel=True)`:
  Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255 in [16/255, 235/255], not rounded, data
  range 1, no clipping. On pyiqa's calibration pair I03 it gives 0.7353 where `ssim` gives 0.6997.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from seedvr2_jax.errors import InputError

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
# BT.601 studio-range luma: Y = (16 + coefficients . RGB) / 255 for RGB in [0, 1].
Y_OFFSET = 16.0
Y_COEFFICIENTS = (65.481, 128.553, 24.966)
# Full-range luma of YIQ (pyiqa's `rgb2yiq` first row), scaled to 0-255 and rounded.
YIQ_Y_COEFFICIENTS = (0.299, 0.587, 0.114)


def _check_pair(x: jnp.ndarray, y: jnp.ndarray, min_size: int = 1) -> None:
  if x.shape != y.shape or x.ndim < 3 or x.shape[-1] != 3:
    raise InputError(f"expected two (..., H, W, 3) images of one shape, got {x.shape} and "
                     f"{y.shape}")
  if min(x.shape[-3:-1]) < min_size:
    raise InputError(f"images of {x.shape[-2]}x{x.shape[-3]} are smaller than the "
                     f"{min_size}x{min_size} SSIM window")


def mse(x_hwc: jnp.ndarray, y_hwc: jnp.ndarray) -> jnp.ndarray:
  """(..., H, W, 3) x2 -> (...) mean squared error over H, W and channels."""
  sq = jnp.square(jnp.asarray(x_hwc, jnp.float32) - jnp.asarray(y_hwc, jnp.float32))
  return jnp.mean(jnp.mean(jnp.mean(sq, axis=-1), axis=-1), axis=-1)  # nested: float32 accuracy


def psnr(x_hwc: jnp.ndarray, y_hwc: jnp.ndarray) -> jnp.ndarray:
  """(..., H, W, 3) in [0, 1] x2 -> (...) PSNR in dB on RGB, data range 1 (+inf if equal)."""
  _check_pair(x_hwc, y_hwc)
  return -10.0 * jnp.log10(mse(x_hwc, y_hwc))


def rgb_to_y_rounded(x_hwc: jnp.ndarray) -> jnp.ndarray:
  """(..., H, W, 3) RGB in [0, 1] -> (..., H, W) round(255 * YIQ luma), float32 in [0, 255]."""
  x_hwc = jnp.asarray(x_hwc, jnp.float32)
  cr, cg, cb = YIQ_Y_COEFFICIENTS
  return jnp.round((cr * x_hwc[..., 0] + cg * x_hwc[..., 1] + cb * x_hwc[..., 2]) * 255.0)


def rgb_to_y(x_hwc: jnp.ndarray) -> jnp.ndarray:
  """(..., H, W, 3) RGB in [0, 1] -> (..., H, W) BT.601 studio-range luma in [16, 235] / 255."""
  x_hwc = jnp.asarray(x_hwc, jnp.float32)
  r, g, b = x_hwc[..., 0], x_hwc[..., 1], x_hwc[..., 2]
  cr, cg, cb = Y_COEFFICIENTS
  return (Y_OFFSET + cr * r + cg * g + cb * b) / 255.0  # no dot: exact float32 on any backend


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
  """(size,) normalised 1-D Gaussian; its outer product is the 2-D SSIM window."""
  r = np.arange(size, dtype=np.float64) - (size - 1) / 2
  g = np.exp(-(r ** 2) / (2 * sigma ** 2))
  return (g / g.sum()).astype(np.float32)


def _filter_valid(maps_nhwc: jnp.ndarray) -> jnp.ndarray:
  """Separable Gaussian 'valid' filter of every channel: (N, H, W, C) -> (N, H-10, W-10, C)."""
  c = maps_nhwc.shape[-1]
  g = jnp.asarray(gaussian_window())
  dims = ("NHWC", "HWIO", "NHWC")
  out = maps_nhwc
  for kernel in (g[:, None], g[None, :]):  # rows, then columns
    out = jax.lax.conv_general_dilated(
        out, jnp.tile(kernel[:, :, None, None], (1, 1, 1, c)), (1, 1), "VALID",
        dimension_numbers=dims, feature_group_count=c, precision=jax.lax.Precision.HIGHEST)
  return out


def ssim_gray(x_hw: jnp.ndarray, y_hw: jnp.ndarray, data_range: float = 1.0,
              clip_cs: bool = False) -> jnp.ndarray:
  """(..., H, W) single-channel images x2 -> (...) mean SSIM (Gaussian window, 'valid');
  `clip_cs` clips the contrast-structure term at 0 first (pyiqa)."""
  lead, (h, w) = x_hw.shape[:-2], x_hw.shape[-2:]
  x_nhw = jnp.reshape(jnp.asarray(x_hw, jnp.float32), (-1, h, w))
  y_nhw = jnp.reshape(jnp.asarray(y_hw, jnp.float32), (-1, h, w))
  # (Co)variances from images centred on their means: less float32 cancellation in E[x^2] - mu^2.
  m_x, m_y = (jnp.mean(v, axis=(1, 2), keepdims=True) for v in (x_nhw, y_nhw))
  xc, yc = x_nhw - m_x, y_nhw - m_y
  maps = jnp.stack([xc, yc, xc * xc, yc * yc, xc * yc], axis=-1)
  mu_xc, mu_yc, e_xx, e_yy, e_xy = jnp.moveaxis(_filter_valid(maps), -1, 0)
  var_x, var_y = e_xx - mu_xc * mu_xc, e_yy - mu_yc * mu_yc
  cov = e_xy - mu_xc * mu_yc
  mu_x, mu_y = mu_xc + m_x, mu_yc + m_y
  c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
  cs_map = (2 * cov + c2) / (var_x + var_y + c2)
  if clip_cs:
    cs_map = jnp.maximum(cs_map, 0.0)
  ssim_map = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1) * cs_map
  return jnp.reshape(jnp.mean(ssim_map, axis=(-2, -1)), lead)


def ssim(x_hwc: jnp.ndarray, y_hwc: jnp.ndarray) -> jnp.ndarray:
  """(..., H, W, 3) RGB in [0, 1] x2 -> (...) SSIM, pyiqa's convention (module docstring)."""
  _check_pair(x_hwc, y_hwc, SSIM_WINDOW)
  return ssim_gray(rgb_to_y_rounded(x_hwc), rgb_to_y_rounded(y_hwc), 255.0, clip_cs=True)


def ssim_bt601(x_hwc: jnp.ndarray, y_hwc: jnp.ndarray) -> jnp.ndarray:
  """(..., H, W, 3) RGB in [0, 1] x2 -> (...) SSIM on BT.601 studio-range Y (module docstring)."""
  _check_pair(x_hwc, y_hwc, SSIM_WINDOW)
  return ssim_gray(rgb_to_y(x_hwc), rgb_to_y(y_hwc))
