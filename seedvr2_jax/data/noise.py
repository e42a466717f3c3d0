"""Additive noise of the Real-ESRGAN degradation model on planar (T, 3, H, W) float32 clips.

Each frame's noise comes from that frame's own generator, so a clip degraded in chunks of frames
gets the same noise as when degraded whole. Strengths are per frame, (T,).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GRAY = np.array([0.2989, 0.587, 0.114], np.float32)  # torchvision rgb_to_grayscale
_EXACT_POISSON_BELOW = 25.0


def gaussian(x_tchw: np.ndarray, sigma_t: np.ndarray, gray: bool,
             rngs: Sequence[np.random.Generator]) -> np.ndarray:
  """N(0, sigma^2) noise, sigma on the 0..255 scale; gray: one field shared by R, G and B.
  Returns (T, 3 or 1, H, W) float32 to add to x."""
  t, _, h, w = x_tchw.shape
  noise = np.empty((t, 1 if gray else 3, h, w), np.float32)
  for frame_noise, rng in zip(noise, rngs):
    rng.standard_normal(out=frame_noise, dtype=np.float32)
  noise *= (np.asarray(sigma_t, np.float32) / 255)[:, None, None, None]
  return noise


def _levels(x8: np.ndarray) -> np.ndarray:
  """(T,) 2^ceil(log2(distinct 8-bit values)) of each frame of (T, ...) uint8: the photon count
  scale Real-ESRGAN (after scikit-image) gives Poisson noise."""
  t = x8.shape[0]
  keys = x8.reshape(t, -1) + (np.arange(t, dtype=np.int64) * 256)[:, None]
  distinct = np.count_nonzero(np.bincount(keys.ravel(), minlength=256 * t).reshape(t, 256),
                              axis=1)
  return 2.0 ** np.ceil(np.log2(distinct))


def _poisson(rng: np.random.Generator, lam: np.ndarray) -> np.ndarray:
  """Poisson(lam) counts as float32: exact below 25 counts, a rounded normal approximation
  (mean and variance lam) above, where the two are near identical and numpy's sampler is slow."""
  counts = np.rint(lam + np.sqrt(lam) * rng.standard_normal(lam.shape, dtype=np.float32))
  small = lam < _EXACT_POISSON_BELOW
  counts[small] = rng.poisson(lam[small])
  return np.maximum(counts, 0, out=counts)


def poisson(x_tchw: np.ndarray, scale_t: np.ndarray, gray: bool,
            rngs: Sequence[np.random.Generator]) -> np.ndarray:
  """Shot noise of the 8-bit-rounded image (or its luma if gray, shared by R, G and B) times
  `scale`. Returns (T, 3 or 1, H, W) float32 to add to x."""
  img = np.tensordot(x_tchw, GRAY, axes=([1], [0]))[:, None] if gray else x_tchw
  img8 = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
  img = img8.astype(np.float32) / 255
  vals = _levels(img8).astype(np.float32)
  noise = np.empty_like(img)
  for i, rng in enumerate(rngs):
    noise[i] = _poisson(rng, img[i] * vals[i]) / vals[i] - img[i]
  noise *= np.asarray(scale_t, np.float32)[:, None, None, None]
  return noise
