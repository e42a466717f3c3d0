"""Random blur kernels of the Real-ESRGAN degradation model (basicsr `degradations.py`).

Gaussian, generalized Gaussian and plateau kernels, isotropic or anisotropic (random sigma_x,
sigma_y and rotation), and the circular low-pass (sinc) kernel. Kernels are (K, K) float64 with
K odd, centred, and sum to one. Randomness comes from a `np.random.Generator` only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso",
                "plateau_aniso")
KERNEL_SIZES = tuple(range(7, 22, 2))


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
  """(K, K) x (column) and y (row) offsets from the centre."""
  ax = np.arange(size, dtype=np.float64) - size // 2
  return np.meshgrid(ax, ax)


def _mahalanobis(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
  """(K, K) squared distance [x y] S^-1 [x y]^T, S = R diag(sigma_x^2, sigma_y^2) R^T."""
  x, y = _grid(size)
  c, s = math.cos(theta), math.sin(theta)
  along, across = c * x + s * y, -s * x + c * y  # coordinates in the rotated frame
  return (along / sigma_x) ** 2 + (across / sigma_y) ** 2


def _normalized(kernel: np.ndarray) -> np.ndarray:
  return kernel / kernel.sum()


def gaussian(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
  """exp(-d/2): the bivariate Gaussian."""
  return _normalized(np.exp(-0.5 * _mahalanobis(size, sigma_x, sigma_y, theta)))


def generalized_gaussian(size: int, sigma_x: float, sigma_y: float, theta: float,
                         beta: float) -> np.ndarray:
  """exp(-d^beta / 2): beta < 1 heavier tails, beta > 1 flatter top (beta = 1: Gaussian)."""
  return _normalized(np.exp(-0.5 * _mahalanobis(size, sigma_x, sigma_y, theta) ** beta))


def plateau(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
  """1 / (1 + d^beta): a flat top with polynomial tails."""
  return _normalized(1.0 / (_mahalanobis(size, sigma_x, sigma_y, theta) ** beta + 1.0))


def sinc(size: int, omega_c: float) -> np.ndarray:
  """Circular low-pass filter with cutoff `omega_c` radians (pi: no cut), ringing included."""
  x, y = _grid(size)
  r = np.hypot(x, y)
  r[size // 2, size // 2] = 1.0  # the centre is set below (limit r -> 0)
  kernel = omega_c * special.j1(omega_c * r) / (2 * np.pi * r)
  kernel[size // 2, size // 2] = omega_c ** 2 / (4 * np.pi)
  return _normalized(kernel)


def _random_beta(rng: np.random.Generator, beta_range: Sequence[float]) -> float:
  """Half the draws below 1 and half above, as basicsr (which assumes lo <= 1 <= hi)."""
  lo, hi = beta_range
  return rng.uniform(lo, 1.0) if rng.uniform() < 0.5 else rng.uniform(1.0, hi)


def random_mixed(rng: np.random.Generator, size: int, kernel_list: Sequence[str],
                 kernel_prob: Sequence[float], sigma_range: Sequence[float],
                 betag_range: Sequence[float], betap_range: Sequence[float]) -> np.ndarray:
  """One of `kernel_list` (weights `kernel_prob`) with random sigmas, rotation and beta."""
  probs = np.asarray(kernel_prob, np.float64)
  kind = kernel_list[rng.choice(len(kernel_list), p=probs / probs.sum())]
  sigma_x = rng.uniform(*sigma_range)
  if kind in ("iso", "generalized_iso", "plateau_iso"):
    sigma_y, theta = sigma_x, 0.0
  else:
    sigma_y, theta = rng.uniform(*sigma_range), rng.uniform(-np.pi, np.pi)
  if kind.startswith("generalized"):
    return generalized_gaussian(size, sigma_x, sigma_y, theta, _random_beta(rng, betag_range))
  if kind.startswith("plateau"):
    return plateau(size, sigma_x, sigma_y, theta, _random_beta(rng, betap_range))
  return gaussian(size, sigma_x, sigma_y, theta)


def random_sinc(rng: np.random.Generator, size: int, final: bool = False) -> np.ndarray:
  """A sinc kernel with Real-ESRGAN's cutoff draw: omega_c in [pi/3, pi], or in [pi/5, pi] for
  a blur (not `final`) kernel of 13 taps or more."""
  low = np.pi / 3 if final or size < 13 else np.pi / 5
  return sinc(size, rng.uniform(low, np.pi))


def random_blur(rng: np.random.Generator, sizes: Sequence[int], sinc_prob: float,
                kernel_list: Sequence[str], kernel_prob: Sequence[float],
                sigma_range: Sequence[float], betag_range: Sequence[float],
                betap_range: Sequence[float]) -> np.ndarray:
  """A blur kernel of a random size from `sizes`: sinc with probability `sinc_prob`, else mixed."""
  size = int(rng.choice(sizes))
  if rng.uniform() < sinc_prob:
    return random_sinc(rng, size)
  return random_mixed(rng, size, kernel_list, kernel_prob, sigma_range, betag_range, betap_range)
