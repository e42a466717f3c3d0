"""NIQE (Mittal et al., "Making a 'Completely Blind' Image Quality Analyzer", IEEE SPL 2013),
no-reference, lower is better: pyiqa's `niqe` algorithm in float64 numpy.

Steps (pyiqa's conventions, which differ from BasicSR's and MATLAB's in the luma and the
downsampling): Y = round(255 YIQ luma) (`fidelity.rgb_to_y_rounded`); the image cropped from the
top left to whole 96x96 blocks; at two scales (full, then half size by MATLAB's antialiased
bicubic, computed in float32 as pyiqa does) the MSCN image (7x7 Gaussian, sigma 7/6, replicate
padding, (x - mu) / (sigma + 1)) is cut into blocks (96 px, then 48 px) and each block gives 18
features (AGGD fits of the block and of its products with the block circularly shifted by
(0, 1), (1, 0), (1, 1), (1, -1)); the 36-D features of all blocks are fitted with a Gaussian
(NaN-free rows for the covariance) and compared with the pristine model:
NIQE = sqrt((mu_p - mu) pinv((S_p + S) / 2) (mu_p - mu)^T).

The pristine model is `niqe_pris_params.npz` of BasicSR 1.4.2 (Apache-2.0; the MATLAB release's
`modelparameters.mat` as arrays), vendored in assets/metrics/.
"""

from __future__ import annotations

import math
import os

import numpy as np
from scipy import ndimage, special

from seedvr2_jax.errors import CheckpointError, InputError

PRISTINE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "assets", "metrics", "niqe_pris_params.npz")
BLOCK = 96
FEATURES = 36
# AGGD shape grid, 0.2 to 10 in steps of 0.001 rounded to float32 (torch.arange's float32 grid).
_GAMMA = (0.2 + 0.001 * np.arange(9801)).astype(np.float32).astype(np.float64)
_R_GAMMA = np.exp(2 * special.gammaln(2 / _GAMMA)
                  - (special.gammaln(1 / _GAMMA) + special.gammaln(3 / _GAMMA)))
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


def load_pristine(path: str = PRISTINE) -> tuple[np.ndarray, np.ndarray]:
  """(mu (36,), cov (36, 36)) float64 of the pristine multivariate Gaussian."""
  try:
    with np.load(path) as f:
      mu, cov = f["mu_pris_param"].reshape(-1), f["cov_pris_param"]
  except (OSError, KeyError, ValueError) as e:
    raise CheckpointError(f"{path}: not NIQE pristine parameters ({e})") from None
  if mu.shape != (FEATURES,) or cov.shape != (FEATURES, FEATURES):
    raise CheckpointError(f"{path}: expected mu (36,) and cov (36, 36), got {mu.shape} and "
                          f"{cov.shape}")
  return mu.astype(np.float64), cov.astype(np.float64)


def _gaussian(size: int, sigma: float) -> np.ndarray:
  """MATLAB fspecial('gaussian'): (size, size), sums to one; rounded to float32 as pyiqa's."""
  r = np.arange(size) - (size - 1) / 2
  g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma * sigma))
  g[g < np.finfo(g.dtype).eps * g.max()] = 0
  return (g / g.sum()).astype(np.float32).astype(np.float64)


def mscn(y_hw: np.ndarray) -> np.ndarray:
  """(H, W) float64 -> mean-subtracted contrast-normalised coefficients (replicate padding)."""
  window = _gaussian(7, 7 / 6)
  mu = ndimage.correlate(y_hw, window, mode="nearest")
  second = ndimage.correlate(y_hw * y_hw, window, mode="nearest")
  sigma = np.sqrt(np.abs(second - mu * mu) + np.finfo(np.float64).eps)
  return (y_hw - mu) / (sigma + 1)


def _cubic(x: np.ndarray) -> np.ndarray:
  """MATLAB's bicubic kernel (a = -0.5)."""
  ax = np.abs(x)
  near = 1.5 * ax ** 3 - 2.5 * ax ** 2 + 1
  far = -0.5 * ax ** 3 + 2.5 * ax ** 2 - 4 * ax + 2
  return np.where(ax <= 1, near, np.where(ax <= 2, far, 0)).astype(x.dtype)


def half_size(x_hw: np.ndarray) -> np.ndarray:
  """MATLAB imresize(x, 0.5) with antialiasing, in float32 as pyiqa's discrete-kernel path:
  8 taps cubic(+-0.25 ... +-1.75), symmetric padding by 3, stride 2. Even H, W."""
  taps = _cubic(np.linspace(-1.75, 1.75, 8, dtype=np.float32))
  kernel = np.outer(taps, taps)
  kernel = kernel / kernel.sum()
  padded = np.pad(x_hw.astype(np.float32), 3, mode="symmetric")
  h, w = x_hw.shape[0] // 2, x_hw.shape[1] // 2
  out = np.zeros((h, w), np.float32)
  for i in range(8):
    for j in range(8):
      out += kernel[i, j] * padded[i:i + 2 * h:2, j:j + 2 * w:2]
  return out.astype(np.float64)


def aggd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(N, h, w) -> AGGD (alpha, beta_left, beta_right), each (N,), by moment matching; NaN where
  a block has no negative or no positive value."""
  flat = x.reshape(x.shape[0], -1)
  left, right = flat < 0, flat > 0
  with np.errstate(invalid="ignore", divide="ignore"):
    left_std = np.sqrt(np.sum(np.where(left, flat * flat, 0), -1) / left.sum(-1))
    right_std = np.sqrt(np.sum(np.where(right, flat * flat, 0), -1) / right.sum(-1))
    gamma_hat = left_std / right_std
    r_hat = np.mean(np.abs(flat), -1) ** 2 / np.mean(flat * flat, -1)
  r_norm = r_hat * (gamma_hat ** 3 + 1) * (gamma_hat + 1) / (gamma_hat ** 2 + 1) ** 2
  alpha = _GAMMA[np.argmin(np.abs(_R_GAMMA[None] - r_norm[:, None]), -1)]
  ratio = np.sqrt(np.exp(special.gammaln(1 / alpha) - special.gammaln(3 / alpha)))
  return alpha, left_std * ratio, right_std * ratio


def block_features(blocks: np.ndarray) -> np.ndarray:
  """(N, b, b) MSCN blocks -> (N, 18) NIQE features."""
  alpha, beta_l, beta_r = aggd(blocks)
  feats = [alpha, (beta_l + beta_r) / 2]
  for shift in _SHIFTS:
    alpha, beta_l, beta_r = aggd(blocks * np.roll(blocks, shift, axis=(1, 2)))
    mean = (beta_r - beta_l) * np.exp(special.gammaln(2 / alpha) - special.gammaln(1 / alpha))
    feats += [alpha, mean, beta_l, beta_r]
  return np.stack(feats, -1)


def _blocks(x_hw: np.ndarray, size: int) -> np.ndarray:
  h, w = x_hw.shape[0] // size, x_hw.shape[1] // size
  return x_hw.reshape(h, size, w, size).transpose(0, 2, 1, 3).reshape(h * w, size, size)


def niqe_y(y_hw: np.ndarray, pristine: tuple[np.ndarray, np.ndarray]) -> float:
  """(H, W) luma on the 0-255 scale (H, W >= 96) -> NIQE; NaN when no block has all its
  features defined (a flat image: its AGGD fits divide by zero, as in pyiqa)."""
  h, w = (n - n % BLOCK for n in y_hw.shape)
  if min(h, w) < BLOCK:
    raise InputError(f"NIQE needs images of at least {BLOCK}x{BLOCK}, got "
                     f"{y_hw.shape[1]}x{y_hw.shape[0]}")
  y_hw = np.asarray(y_hw, np.float64)[:h, :w]
  feats = []
  for scale in (1, 2):
    feats.append(block_features(_blocks(mscn(y_hw), BLOCK // scale)))
    if scale == 1:
      y_hw = half_size(y_hw / 255.0) * 255.0
  feats = np.concatenate(feats, -1)
  rows = feats[~np.isnan(feats).any(-1)]
  if not len(rows):
    return math.nan
  mu = np.nanmean(feats, 0)
  cov = np.cov(rows, rowvar=False, ddof=1 if len(rows) > 1 else 0)
  mu_p, cov_p = pristine
  diff = mu_p - mu
  return float(math.sqrt(diff @ np.linalg.pinv((cov_p + cov) / 2) @ diff))
