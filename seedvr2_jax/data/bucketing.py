"""Buckets: the (frames, height, width) shapes of training examples, which clips fit which
bucket, and the bucket of every step (a function of (seed, step) alone, so all hosts agree
without talking).

A clip fits bucket (t, h, w) when it has (t - 1) * frame_stride + 1 frames and at least h x w
pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import ml_collections
import numpy as np

from seedvr2_jax.errors import ConfigError

SIZE_MULTIPLE = 16  # VAE 8 x DiT patch 2
_SCHEDULE_CHUNK = 4096


def _bucket(value) -> tuple[int, int, int]:
  try:
    t, h, w = (int(v) for v in value)
  except (TypeError, ValueError):
    raise ConfigError(f"bucket {value!r} must be 3 integers (frames, height, width)") from None
  return t, h, w


def check_buckets(buckets: Sequence, scale: int) -> tuple[tuple[int, int, int], ...]:
  """(frames, height, width) buckets, validated: frames 4n + 1, sizes multiples of 16 and of
  `scale`."""
  out = tuple(_bucket(b) for b in buckets)
  if not out:
    raise ConfigError("data.buckets is empty")
  for t, h, w in out:
    if t < 1 or t % 4 != 1:
      raise ConfigError(f"bucket {t}x{h}x{w}: frames must be 4n+1 (1, 5, 9, ...)")
    if h <= 0 or w <= 0 or h % SIZE_MULTIPLE or w % SIZE_MULTIPLE or h % scale or w % scale:
      raise ConfigError(f"bucket {t}x{h}x{w}: height and width must be positive multiples of "
                        f"{SIZE_MULTIPLE} and of the scale {scale}")
  return out


def normalized_weights(values: Sequence[float], n: int, what: str) -> np.ndarray:
  """`values` (or n equal weights when empty) scaled to sum to 1; ConfigError if unusable."""
  w = np.ones(n) if not len(values) else np.asarray(values, np.float64)
  if w.shape != (n,) or not (w >= 0).all() or not w.sum() > 0:
    raise ConfigError(f"{what} {tuple(values)}: need {n} non-negative weights, not all zero")
  return w / w.sum()


class BucketSchedule:
  """bucket(step): drawn from rng(seed, step // 4096) with the weights of the stage holding
  `step` (`stages`: (first step, weights), the first at step 0); occurrence(step): how many
  earlier steps drew the same bucket. Same values on every host."""

  def __init__(self, stages: Sequence[tuple[int, np.ndarray]], seed: int):
    self.starts = np.asarray([start for start, _ in stages])
    cdfs = np.stack([np.cumsum(w) for _, w in stages])
    self.cdfs = cdfs / cdfs[:, -1:]
    self.seed, self.buckets = seed, self.cdfs.shape[1]
    self._counts = [np.zeros(self.buckets, np.int64)]  # per chunk: draws before it

  def _chunk(self, c: int) -> np.ndarray:
    # As Generator.choice(p=w) draws: uniforms looked up in the cumulative weights.
    uniform = np.random.default_rng([self.seed, 0x5EED, c]).random(_SCHEDULE_CHUNK)
    steps = c * _SCHEDULE_CHUNK + np.arange(_SCHEDULE_CHUNK)
    cdf = self.cdfs[np.searchsorted(self.starts, steps, side="right") - 1]
    return (uniform[:, None] >= cdf).sum(axis=1)

  def bucket(self, step: int) -> int:
    return int(self._chunk(step // _SCHEDULE_CHUNK)[step % _SCHEDULE_CHUNK])

  def occurrence(self, step: int) -> int:
    c, i = divmod(step, _SCHEDULE_CHUNK)
    counts = self._counts
    if len(counts) <= c:  # extend a copy: threads may call this concurrently
      counts = list(counts)
      while len(counts) <= c:
        draws = self._chunk(len(counts) - 1)
        counts.append(counts[-1] + np.bincount(draws, minlength=self.buckets))
      self._counts = counts
    chunk = self._chunk(c)
    b = chunk[i]
    return int(counts[c][b] + np.count_nonzero(chunk[:i] == b))


def bucket_stages(cfg: ml_collections.ConfigDict, n: int) -> list[tuple[int, np.ndarray]]:
  """[(first step, normalised weights)] from data.bucket_weights and data.bucket_stages."""
  stages = [(0, normalized_weights(cfg.bucket_weights, n, "data.bucket_weights"))]
  for stage in cfg.bucket_stages:
    try:
      start, weights = int(stage[0]), stage[1]
    except (TypeError, ValueError, IndexError):
      raise ConfigError(f"data.bucket_stages entry {stage!r}: expected (step, weights)") from None
    if start <= stages[-1][0]:
      raise ConfigError(f"data.bucket_stages: steps must increase from 1, got {start} after "
                        f"{stages[-1][0]}")
    stages.append((start, normalized_weights(weights, n, f"data.bucket_stages at {start}")))
  return stages


def fits(clip, bucket: tuple[int, int, int], stride: int) -> bool:
  t, h, w = bucket
  return clip.frames >= (t - 1) * stride + 1 and clip.height >= h and clip.width >= w


def nearest_aspect(clip, buckets, stride: int) -> int | None:
  """The fitting bucket whose aspect ratio is nearest the clip's (ties: larger area, then more
  frames, then the first); None if none fits."""
  fitting = [i for i, b in enumerate(buckets) if fits(clip, b, stride)]
  if not fitting:
    return None
  aspect = math.log(clip.width / clip.height)
  return min(fitting, key=lambda i: (abs(aspect - math.log(buckets[i][2] / buckets[i][1])),
                                     -buckets[i][1] * buckets[i][2], -buckets[i][0], i))


def largest_fitting(clip, buckets, stride: int) -> int | None:
  """The fitting bucket of largest area (ties: more frames, then the first); None if none
  fits."""
  fitting = [i for i, b in enumerate(buckets) if fits(clip, b, stride)]
  return min(fitting, key=lambda i: (-buckets[i][1] * buckets[i][2], -buckets[i][0], i),
             default=None)
