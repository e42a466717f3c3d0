"""The work directory of a resumable restore: `OUTPUT.parts/` next to the output.

It holds `manifest.json` (the input's identity: path, size, mtime, frames; and a hash of every
option that changes output frames) and the final output frames in segments, one `.npy` file
(uint8, (n, H, W, 3)) per clip start: `seg_START_END.npy` holds frames [START, END). A segment is
written under a temporary name, flushed to disk and renamed, so a killed run (Ctrl-C, SIGTERM,
SIGKILL, power loss) leaves only complete segments. A resumed run replays them into the writer
and restores from the first clip that reaches past them (`clips.resume_point`), so its output
frames equal an uninterrupted run's. The directory is removed once the output is complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator

import numpy as np

from seedvr2_jax.errors import InputError
from seedvr2_jax.infer.options import RestoreOptions

# Options that change how frames are stored or what happens around them, not the frames (the
# options a memory budget chooses are in the manifest themselves).
OUTPUT_ONLY_FIELDS = ("crf", "overwrite", "dry_run", "resume", "cache_dir", "audio",
                      "memory_budget")
_SEGMENT = re.compile(r"seg_(\d{6,})_(\d{6,})\.npy$")


def work_dir(output_path: str) -> str:
  return output_path.rstrip(os.sep) + ".parts"


def manifest(input_path: str, frames: int, options: RestoreOptions, boundaries: list[int],
             backend: str) -> dict:
  """What a work directory must match to be resumed: the input file, the options that change
  frames (`backend` included: CPU and GPU round differently) and the segment boundaries."""
  stat = os.stat(input_path)
  frame_options = {k: v for k, v in dataclasses.asdict(options).items()
                   if k not in OUTPUT_ONLY_FIELDS}
  digest = hashlib.sha256(json.dumps([frame_options, backend], sort_keys=True,
                                     default=str).encode()).hexdigest()
  return {"input": {"path": os.path.abspath(input_path), "size": stat.st_size,
                    "mtime_ns": stat.st_mtime_ns, "frames": frames},
          "options_sha256": digest, "boundaries": boundaries}


def _write_durably(path: str, write) -> None:
  """`write(file)` into a temporary sibling, fsync, rename onto `path`."""
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    write(f)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


class WorkDir:
  """Segments of final frames of one output. `open` starts or resumes one; `finished` frames
  are already saved; `add(frame)` takes the next frame and saves a segment at each boundary."""

  def __init__(self, path: str, boundaries: list[int], finished: int):
    self.path, self.boundaries, self.finished = path, boundaries, finished
    self._pending: list[np.ndarray] = []
    self._next = finished  # index of the next frame given to `add`

  @classmethod
  def open(cls, output_path: str, expected: dict, *, resume: bool,
           overwrite: bool) -> WorkDir:
    """Resumes `work_dir(output_path)` when `resume` and its manifest equals `expected`; starts
    it afresh when it is absent, or with `overwrite`; else InputError."""
    path = work_dir(output_path)
    manifest_path = os.path.join(path, "manifest.json")
    if os.path.isdir(path) and not overwrite:
      if not resume:
        raise InputError(f"{path} holds an interrupted restore of {output_path}: pass --resume "
                         f"to continue it or --overwrite to start over")
      try:
        with open(manifest_path) as f:
          found = json.load(f)
      except (OSError, ValueError):
        found = None
      if found != expected:
        raise InputError(f"{path} was made for another input or other options: remove it or "
                         f"pass --overwrite to start over")
      return cls(path, expected["boundaries"], cls._saved_frames(path, expected["boundaries"]))
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    _write_durably(manifest_path, lambda f: f.write(json.dumps(expected, indent=1).encode()))
    return cls(path, expected["boundaries"], 0)

  @staticmethod
  def _saved_frames(path: str, boundaries: list[int]) -> int:
    """Frames covered by consecutive complete segments from frame 0."""
    spans = {}
    for name in os.listdir(path):
      if (m := _SEGMENT.match(name)):
        spans[int(m.group(1))] = int(m.group(2))
    done = 0
    while done in spans and spans[done] in boundaries:
      done = spans[done]
    return done

  def _segment(self, start: int, end: int) -> str:
    return os.path.join(self.path, f"seg_{start:06d}_{end:06d}.npy")

  def saved(self) -> Iterator[np.ndarray]:
    """The `finished` frames, in order, one segment in memory at a time."""
    start = 0
    for end in self.boundaries:
      if end > self.finished:
        return
      yield from np.array(np.load(self._segment(start, end), mmap_mode="r"))
      start = end

  def add(self, frame: np.ndarray) -> None:
    self._pending.append(frame)
    self._next += 1
    if self._next in self.boundaries:
      start = self._next - len(self._pending)
      segment = np.stack(self._pending)
      _write_durably(self._segment(start, self._next), lambda f: np.save(f, segment))
      self._pending = []

  def remove(self) -> None:
    shutil.rmtree(self.path, ignore_errors=True)
