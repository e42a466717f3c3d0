"""Adaptive (shifted) window partitions of a token grid, resolved in numpy at trace time.

The official SeedVR2 DiT splits each sample's token grid (t, h, w) into windows whose size
depends only on the aspect ratio (a "720p-normalised" grid of `num_windows` windows) and on t
(capped at 30). Even layers use the regular partition, odd layers the half-window-shifted one,
truncated at the borders (not rolled), so windows are ragged. Everything here is plain
Python/numpy on static shapes; a `WindowPlan` holds the static indices the jitted attention uses.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

REGULAR = "720pwin_by_size_bysize"
SHIFTED = "720pswin_by_size_bysize"
WINDOW_METHODS = (REGULAR, SHIFTED)

# (t0, t1, h0, h1, w0, w1) half-open intervals on the token grid.
Window = tuple[int, int, int, int, int, int]


def _window_size(grid: tuple[int, int, int], num_windows: tuple[int, int, int]):
  """Window extent (wt, wh, ww) for a grid, from the 720p-normalised window counts."""
  t, h, w = grid
  nt, nh, nw = num_windows
  scale = math.sqrt((45 * 80) / (h * w))
  # Python's round() is half-to-even, as in the official code.
  resized_h, resized_w = round(h * scale), round(w * scale)
  return math.ceil(min(t, 30) / nt), math.ceil(resized_h / nh), math.ceil(resized_w / nw)


def _regular_axis(n: int, size: int) -> list[tuple[int, int]]:
  return [(i * size, min((i + 1) * size, n)) for i in range(math.ceil(n / size))
          if min((i + 1) * size, n) > i * size]


def _shifted_axis(n: int, size: int) -> list[tuple[int, int]]:
  if size >= n:
    return [(0, n)]
  count = math.ceil((n - 0.5) / size) + 1
  # int() truncates toward zero, as in the official code.
  spans = [(max(int((i - 0.5) * size), 0), min(int((i + 0.5) * size), n)) for i in range(count)]
  return [(a, b) for a, b in spans if b > a]


def make_windows(grid: tuple[int, int, int], num_windows: tuple[int, int, int],
                 method: str) -> list[Window]:
  """Windows of `grid` in the official order (w slowest, then h, t fastest)."""
  if method not in WINDOW_METHODS:
    raise ValueError(f"unknown window method {method!r}; expected one of {WINDOW_METHODS}")
  t, h, w = grid
  wt, wh, ww = _window_size(grid, num_windows)
  axis = _regular_axis if method == REGULAR else _shifted_axis
  ts, hs, ws = axis(t, wt), axis(h, wh), axis(w, ww)
  return [(t0, t1, h0, h1, w0, w1) for (w0, w1) in ws for (h0, h1) in hs for (t0, t1) in ts]


@dataclasses.dataclass(frozen=True, eq=False)
class WindowPlan:
  """Static indices for one (grid, method) pair. N = t*h*w tokens, n = number of windows.

  gather_idx:  (n, max_len) int32, token index of slot j of window i (padding slots point at 0).
  lengths:     (n,) int32, video tokens per window.
  scatter_idx: (N,) int32, flat slot (i * max_len + j) that holds each token.
  local_pos:   (N, 3) int32, window-local (t, h, w) coordinates of each token.
  extent:      (N, 3) int32, (t, h, w) extent of each token's window.
  """

  grid: tuple[int, int, int]
  windows: tuple[Window, ...]
  gather_idx: np.ndarray
  lengths: np.ndarray
  scatter_idx: np.ndarray
  local_pos: np.ndarray
  extent: np.ndarray

  @property
  def num_windows(self) -> int:
    return len(self.windows)

  @property
  def max_len(self) -> int:
    return self.gather_idx.shape[1]


@functools.lru_cache(maxsize=256)
def window_plan(grid: tuple[int, int, int], num_windows: tuple[int, int, int],
                method: str) -> WindowPlan:
  """Builds (and caches) the plan for a static token grid."""
  grid = tuple(int(g) for g in grid)
  if min(grid) < 1:
    raise ValueError(f"token grid must be positive, got {grid}")
  windows = make_windows(grid, tuple(num_windows), method)
  t, h, w = grid
  token_id = np.arange(t * h * w, dtype=np.int32).reshape(t, h, w)
  lengths = np.array([(t1 - t0) * (h1 - h0) * (w1 - w0) for t0, t1, h0, h1, w0, w1 in windows],
                     np.int32)
  max_len = int(lengths.max())
  gather_idx = np.zeros((len(windows), max_len), np.int32)
  scatter_idx = np.full(t * h * w, -1, np.int64)
  local_pos = np.zeros((t * h * w, 3), np.int32)
  extent = np.zeros((t * h * w, 3), np.int32)
  for i, (t0, t1, h0, h1, w0, w1) in enumerate(windows):
    ids = token_id[t0:t1, h0:h1, w0:w1].reshape(-1)
    gather_idx[i, :ids.size] = ids
    if (scatter_idx[ids] >= 0).any():
      raise AssertionError(f"windows overlap on grid {grid}")
    scatter_idx[ids] = i * max_len + np.arange(ids.size)
    lt, lh, lw = np.meshgrid(np.arange(t1 - t0), np.arange(h1 - h0), np.arange(w1 - w0),
                             indexing="ij")
    local_pos[ids] = np.stack([lt.ravel(), lh.ravel(), lw.ravel()], -1)
    extent[ids] = (t1 - t0, h1 - h0, w1 - w0)
  if (scatter_idx < 0).any():
    raise AssertionError(f"windows do not cover grid {grid}")
  return WindowPlan(grid, tuple(windows), gather_idx, lengths, scatter_idx.astype(np.int32),
                    local_pos, extent)
