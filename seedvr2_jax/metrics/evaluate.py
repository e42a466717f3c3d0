"""`seedvr2-jax evaluate`: the metric suite (`suite.py`) of a restored video, against its
reference for the full-reference metrics.

Both inputs are anything `video_io` reads (a video, an image, a folder of frames) of one frame
size. Frames are compared pairwise in order, `crop_border` pixels dropped on every side first;
no-reference metrics score the restored frames alone; a video's score is the mean of its
per-frame values (pyiqa's convention, the usual video SR protocol).
"""

from __future__ import annotations

import itertools
import json
import os
import sys

import numpy as np

from seedvr2_jax.data import video_io
from seedvr2_jax.errors import InputError
from seedvr2_jax.metrics import suite as suite_lib
from seedvr2_jax.utils import atomic


def _frame_count(info: video_io.MediaInfo, max_frames: int | None) -> int:
  return info.frames if max_frames is None else min(info.frames, max_frames)


def _check(restored: video_io.MediaInfo, reference: video_io.MediaInfo, crop_border: int,
           max_frames: int | None) -> int:
  """Frames to compare; InputError if the two inputs cannot be compared."""
  if crop_border < 0 or (max_frames is not None and max_frames < 1):
    raise InputError(f"need crop_border >= 0 and max_frames >= 1, got {crop_border} and "
                     f"{max_frames}")
  if (restored.width, restored.height) != (reference.width, reference.height):
    raise InputError(f"frame sizes differ: {restored.path} is {restored.width}x{restored.height}"
                     f", {reference.path} is {reference.width}x{reference.height}")
  frames = _frame_count(restored, max_frames)
  if frames != _frame_count(reference, max_frames):
    raise InputError(f"frame counts differ: {restored.path} has {restored.frames}, "
                     f"{reference.path} has {reference.frames} (--max-frames compares a prefix)")
  if 2 * crop_border >= min(restored.width, restored.height):
    raise InputError(f"crop border {crop_border} leaves nothing of "
                     f"{restored.width}x{restored.height} frames")
  return frames


def evaluate(restored: str, reference: str | None = None, *, crop_border: int = 0,
             max_frames: int | None = None, metrics: tuple[str, ...] = suite_lib.DEFAULT,
             iqa_weights: str | None = None, log=print) -> dict:
  """Means and per-frame values: {"frames", <metric>: mean (DOVER: its one video score), ...,
  "per_frame": {metric: [...]}, "unavailable": {metric: reason}}. Without `reference` only
  no-reference metrics apply."""
  info_x = video_io.probe(restored)
  info_y = video_io.probe(reference) if reference is not None else None
  frames = _check(info_x, info_y or info_x, crop_border, max_frames)
  suite = suite_lib.Suite.load(metrics, log, iqa_weights)
  suite.check_reference(reference is not None)
  score = suite.frame_scorer(reference is not None)
  c = crop_border
  video = suite.video_scorer(frames, info_x.height - 2 * c, info_x.width - 2 * c)
  wanted = set(video[0]) if video else set()
  kept: dict[int, np.ndarray] = {}  # the frames a video-level metric samples
  per_frame: dict[str, list[float]] = {}
  frames_x = video_io.read_frames(info_x)
  frames_y = video_io.read_frames(info_y) if info_y else itertools.repeat(None)
  count = 0
  for x_hwc, y_hwc in itertools.islice(zip(frames_x, frames_y), frames):
    x_hwc = x_hwc[c:x_hwc.shape[0] - c, c:x_hwc.shape[1] - c]
    if y_hwc is not None:
      y_hwc = y_hwc[c:y_hwc.shape[0] - c, c:y_hwc.shape[1] - c]
    for name, value in score(x_hwc, y_hwc).items():
      per_frame.setdefault(name, []).append(value)
    if count in wanted:
      kept[count] = x_hwc
    count += 1
  if count != frames:
    raise InputError(f"decoded {count} frames, expected {frames} ({restored}, {reference})")
  result = {"restored": restored, "reference": reference, "frames": frames,
            "crop_border": crop_border}
  result.update({name: float(np.mean(values)) for name, values in per_frame.items()})
  if video:
    result.update(video[1]([kept[i] for i in video[0]]))
  result["per_frame"] = per_frame
  result["unavailable"] = suite.unavailable
  return result


def run_cli(restored: str, reference: str | None = None, *, crop_border: int = 0,
            max_frames: int | None = None, json_path: str | None = None,
            metrics: tuple[str, ...] = suite_lib.DEFAULT, iqa_weights: str | None = None,
            overwrite: bool = False) -> dict:
  """`evaluate`, then one printed line of `name=value` means and optionally a JSON file of
  everything (the means under the same names, as top-level keys)."""
  if json_path and os.path.exists(json_path) and not overwrite:
    raise InputError(f"{json_path} exists (pass --overwrite to replace it)")
  result = evaluate(restored, reference, crop_border=crop_border, max_frames=max_frames,
                    metrics=metrics, iqa_weights=iqa_weights,
                    log=lambda line: print(line, file=sys.stderr))
  means = " ".join(f"{k}={result[k]:.4f}" for k in metrics if k in result)
  print(f"frames={result['frames']} {means}")
  if json_path:  # identical frames: psnr is Infinity
    atomic.write_text(json_path, json.dumps(result, indent=1), overwrite=overwrite)
  return result
