"""Overlapping windows along one axis and linear cross-fade weights (tiles, clips)."""

from __future__ import annotations

import numpy as np

from seedvr2_jax.errors import ConfigError


def window_starts(size: int, window: int, overlap: int) -> list[int]:
  """Starts of windows of length `window` covering [0, size) with >= `overlap` overlap; the
  last window ends at `size` (so all windows have the same length)."""
  if window >= size:
    return [0]
  if not 0 <= overlap < window:
    raise ConfigError(f"overlap {overlap} must be >= 0 and smaller than the window {window}")
  return sorted(set(range(0, size - window, window - overlap)) | {size - window})


def ramp_weights(window: int, starts: list[int], margin: int = 0) -> np.ndarray:
  """(len(starts), window) weights: 1 inside a window; across each overlap with a neighbour, 0
  within `margin` of the window's edge and a linear ramp over the rest (so positions within
  `margin` of an inner edge take their value from the neighbour alone). Unnormalised: divide
  by their sum over windows (`normalized_weights`). Overlaps must exceed 2 * margin."""
  weights = np.ones((len(starts), window), np.float32)
  pos = np.arange(window) + 0.5
  for i, s in enumerate(starts):
    if i > 0:
      left = starts[i - 1] + window - s
      weights[i] *= np.clip((pos - margin) / (left - 2 * margin), 0, 1)
    if i < len(starts) - 1:
      right = s + window - starts[i + 1]
      weights[i] *= np.clip((window - margin - pos) / (right - 2 * margin), 0, 1)
  return weights


def normalized_weights(size: int, window: int, starts: list[int]) -> np.ndarray:
  """`ramp_weights` divided by their sum at every position, so they sum to one."""
  weights = ramp_weights(window, starts)
  total = np.zeros(size, np.float32)
  for s, w in zip(starts, weights):
    total[s:s + window] += w
  return np.stack([w / total[s:s + window] for s, w in zip(starts, weights)])
