"""Long videos as overlapping clips of one length, cross-faded, streamed with bounded memory.

All clips have the same length (the last one ends at the last frame, overlapping its neighbour
by more if needed), so one compiled program serves them all. In an overlap, outputs are blended
with linear weights that sum to one, so there is no seam at clip boundaries. Scene cuts split
the video into shots that clips never straddle: cross-fades stay inside a shot, and a shot
shorter than the clip length runs as one clip padded with its last frame. Frames are read
and emitted as a stream: a clip's output arrives in chunks of frames, and each frame is emitted
as soon as every clip covering it has delivered it; the host holds the input frames of at most
two batches of clips.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from seedvr2_jax.utils import blend


@dataclasses.dataclass(frozen=True)
class ClipPlan:
  """Clip i runs `length` frames from starts[i]: frames [starts[i], stops[i]) of the video, then
  frame stops[i] - 1 repeated (stops[i] < starts[i] + length only for a shot shorter than a
  clip). `cuts`: the frames that start a new shot."""

  frames: int
  length: int
  starts: tuple[int, ...]
  stops: tuple[int, ...]
  cuts: tuple[int, ...] = ()

  @property
  def count(self) -> int:
    return len(self.starts)

  def weights(self) -> np.ndarray:
    """(count, length) cross-fade weights that sum to one at every frame; 0 on padding."""
    weights = np.zeros((self.count, self.length), np.float32)
    bounds = [0, *self.cuts, self.frames]
    for first, last in zip(bounds[:-1], bounds[1:]):
      shot = [i for i, s in enumerate(self.starts) if first <= s < last]
      if len(shot) == 1 and self.stops[shot[0]] - first < self.length:
        weights[shot[0], :last - first] = 1.0
      else:
        weights[shot] = blend.normalized_weights(
            last - first, self.length, [self.starts[i] - first for i in shot])
    return weights


def plan_clips(frames: int, clip_frames: int | None, overlap: int,
               cuts: tuple[int, ...] = ()) -> ClipPlan:
  """Clips of `clip_frames` frames (None: the longest shot, so without cuts one clip of the
  whole video) overlapping by at least `overlap` frames within each shot; shots start at 0 and
  at each of `cuts`."""
  bounds = [0, *cuts, frames]
  longest = max(b - a for a, b in zip(bounds[:-1], bounds[1:]))
  length = longest if not clip_frames or clip_frames >= longest else clip_frames
  starts, stops = [], []
  for first, last in zip(bounds[:-1], bounds[1:]):
    shot = [first + s for s in blend.window_starts(last - first, length, overlap)]
    starts += shot
    stops += [min(s + length, last) for s in shot]
  return ClipPlan(frames, length, tuple(starts), tuple(stops), tuple(cuts))


def stream_clips(frames: Iterable[np.ndarray], plan: ClipPlan,
                 run: Callable[[list[int], list[np.ndarray]], Iterable[np.ndarray]],
                 batch: int = 1, first_clip: int = 0) -> Iterator[np.ndarray]:
  """Yields output frames in order, from frame `plan.starts[first_clip]` on.

  `run(clip_indices, clips)` restores up to `batch` clips at once; each clip is a
  (length, H, W, C) array of input frames. It returns the clips' outputs as an iterable of
  chunks in frame order, each a (>= len(clip_indices), n, H', W', C) uint8 or uint16 array
  holding the clips' next n output frames (rows past the clips are ignored); frames are yielded
  in that dtype. A chunk (a jax.Array is fine) is read only after the next one has been asked
  for, so reading input, blending and writing output overlap the device's work on the next chunk
  or the next batch of clips.
  `frames` starts at frame `plan.starts[first_clip]` (a resumed run); the first frames yielded
  lack the cross-fade of earlier clips up to `plan.starts[first_clip - 1] + plan.length`.
  """
  source = iter(frames)
  weights = plan.weights()
  inputs: dict[int, np.ndarray] = {}  # frame index -> input frame still needed
  acc: dict[int, np.ndarray] = {}  # frame index -> blended output so far
  read = emitted = plan.starts[first_clip]

  def restore(indices: list[int]) -> Iterator[tuple[list[int], np.ndarray]]:
    nonlocal read
    end = plan.stops[indices[-1]]
    while read < end:
      inputs[read] = next(source)
      read += 1
    clip_inputs = [np.stack([inputs[min(f, plan.stops[i] - 1)]
                             for f in range(plan.starts[i], plan.starts[i] + plan.length)])
                   for i in indices]
    for chunk in run(indices, clip_inputs):
      yield indices, chunk

  batches = [list(range(first, min(first + batch, plan.count)))
             for first in range(first_clip, plan.count, batch)]
  chunks = itertools.chain.from_iterable(map(restore, batches))
  pending, offset = next(chunks), 0  # offset: frames of the pending batch's clips blended
  while pending is not None:
    indices, chunk = pending
    pending = next(chunks, None)  # dispatched before this chunk is read
    chunk = np.asarray(chunk)
    dtype = chunk.dtype
    for i, out in zip(indices, chunk):
      for j, frame in enumerate(out[:plan.stops[i] - plan.starts[i] - offset], offset):
        f = plan.starts[i] + j
        acc[f] = acc.get(f, 0.0) + weights[i, j] * frame.astype(np.float32)
    offset = 0 if pending is None or pending[0] != indices else offset + chunk.shape[1]
    # Final: frames before the first clip still to deliver anything (unfinished clips of this
    # batch, from `offset`; the next batch, from its start).
    waiting = [plan.starts[i] + offset for i in indices if offset and offset < plan.stops[i]
               - plan.starts[i]]
    if indices[-1] + 1 < plan.count:
      waiting.append(plan.starts[indices[-1] + 1])
    done = min(waiting, default=plan.frames)
    for f in range(emitted, done):
      yield np.clip(np.round(acc.pop(f)), 0, np.iinfo(dtype).max).astype(dtype)
      inputs.pop(f, None)  # frames before the next clip's start are not needed again
    emitted = done


def resume_point(plan: ClipPlan, finished: int) -> tuple[int, int]:
  """(first clip to run, frames of its output to drop) to continue a run whose first `finished`
  frames are final: the first clip that reaches past them, so every later frame gets all of its
  clips' contributions."""
  first = next(i for i, stop in enumerate(plan.stops) if stop > finished)
  return first, finished - plan.starts[first]
