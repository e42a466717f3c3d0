"""Long videos as overlapping clips of one length, cross-faded, streamed with bounded memory.

All clips have the same length (the last one ends at the last frame, overlapping its neighbour
by more if needed), so one compiled program serves them all. In an overlap, outputs are blended
with linear weights that sum to one, so there is no seam at clip boundaries. Frames are read
and emitted as a stream: the host holds at most two batches of clips (the one being blended and
the next one, already dispatched).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from seedvr2_jax.utils import blend


@dataclasses.dataclass(frozen=True)
class ClipPlan:
  """Clip i covers frames [starts[i], starts[i] + length)."""

  frames: int
  length: int
  starts: tuple[int, ...]

  @property
  def count(self) -> int:
    return len(self.starts)

  def weights(self) -> np.ndarray:
    """(count, length) cross-fade weights that sum to one at every frame."""
    return blend.normalized_weights(self.frames, self.length, list(self.starts))


def plan_clips(frames: int, clip_frames: int | None, overlap: int) -> ClipPlan:
  """One clip of the whole video (`clip_frames` None or >= frames), else clips of
  `clip_frames` frames overlapping by at least `overlap` frames."""
  length = frames if not clip_frames or clip_frames >= frames else clip_frames
  return ClipPlan(frames, length, tuple(blend.window_starts(frames, length, overlap)))


def stream_clips(frames: Iterable[np.ndarray], plan: ClipPlan,
                 run: Callable[[list[int], list[np.ndarray]], list[np.ndarray]],
                 batch: int = 1, first_clip: int = 0) -> Iterator[np.ndarray]:
  """Yields output frames in order, from frame `plan.starts[first_clip]` on.

  `run(clip_indices, clips)` restores up to `batch` clips at once; each clip is a
  (length, H, W, C) array of input frames and each result a (length, H', W', C) uint8 array
  (a jax.Array is fine: results are only read after the next batch has been dispatched, so
  reading input and writing output overlap the device's work on the next batch).
  `frames` starts at frame `plan.starts[first_clip]` (a resumed run); the first frames yielded
  lack the cross-fade of earlier clips up to `plan.starts[first_clip - 1] + plan.length`.
  """
  source = iter(frames)
  weights = plan.weights()
  inputs: dict[int, np.ndarray] = {}  # frame index -> input frame still needed
  acc: dict[int, np.ndarray] = {}  # frame index -> blended output so far
  read = emitted = plan.starts[first_clip]

  def dispatch(indices: list[int]):
    nonlocal read
    end = plan.starts[indices[-1]] + plan.length
    while read < end:
      inputs[read] = next(source)
      read += 1
    clip_inputs = [np.stack([inputs[f] for f in range(s, s + plan.length)])
                   for s in (plan.starts[i] for i in indices)]
    return indices, run(indices, clip_inputs)

  batches = [list(range(first, min(first + batch, plan.count)))
             for first in range(first_clip, plan.count, batch)]
  pending = dispatch(batches[0])
  for following in batches[1:] + [None]:
    indices, outputs = pending
    pending = dispatch(following) if following else None
    for i, out in zip(indices, outputs):
      for j, frame in enumerate(np.asarray(out, np.float32)):
        f = plan.starts[i] + j
        acc[f] = acc.get(f, 0.0) + weights[i, j] * frame
    done = plan.starts[indices[-1] + 1] if indices[-1] + 1 < plan.count else plan.frames
    for f in range(emitted, done):
      yield np.clip(np.round(acc.pop(f)), 0, 255).astype(np.uint8)
      inputs.pop(f, None)  # frames before the next clip's start are not needed again
    emitted = done


def resume_point(plan: ClipPlan, finished: int) -> tuple[int, int]:
  """(first clip to run, frames of its output to drop) to continue a run whose first `finished`
  frames are final: the first clip that reaches past them, so every later frame gets all of its
  clips' contributions."""
  first = next(i for i, s in enumerate(plan.starts) if s + plan.length > finished)
  return first, finished - plan.starts[first]
