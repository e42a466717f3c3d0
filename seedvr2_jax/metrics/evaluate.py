"""`seedvr2-jax evaluate`: PSNR / SSIM / LPIPS of a restored video against its reference.

Both inputs are anything `video_io` reads (a video, an image, a folder of frames) of one frame
size. Frames are compared pairwise in order, `crop_border` pixels dropped on every side first;
a video's score is the mean of its per-frame values (the usual video SR protocol).
"""

from __future__ import annotations

import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from seedvr2_jax.data import video_io
from seedvr2_jax.errors import InputError
from seedvr2_jax.metrics import fidelity
from seedvr2_jax.metrics import lpips as lpips_lib
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


def _metrics_fn(crop_border: int, with_lpips: bool):
  """A jitted (lpips params, x (H, W, 3) uint8, y) -> {metric: scalar} for one frame pair."""
  def metrics(params, x_hwc, y_hwc):
    c = crop_border
    x_hwc, y_hwc = (v[c:v.shape[0] - c, c:v.shape[1] - c].astype(jnp.float32) / 255.0
                    for v in (x_hwc, y_hwc))
    out = {"psnr": fidelity.psnr(x_hwc, y_hwc), "ssim": fidelity.ssim(x_hwc, y_hwc)}
    if with_lpips:
      out["lpips"] = lpips_lib.lpips(params, x_hwc, y_hwc)
    return out
  return jax.jit(metrics)


def evaluate(restored: str, reference: str, *, crop_border: int = 0,
             max_frames: int | None = None, with_lpips: bool = True,
             lpips_params: dict | None = None) -> dict:
  """Per-frame and mean metrics: {"frames", "psnr", "ssim", ["lpips"], "per_frame": {...}}."""
  info_x, info_y = video_io.probe(restored), video_io.probe(reference)
  frames = _check(info_x, info_y, crop_border, max_frames)
  params = None
  if with_lpips:
    params = lpips_lib.load_weights() if lpips_params is None else lpips_params
  fn = _metrics_fn(crop_border, with_lpips)
  per_frame: dict[str, list[float]] = {}
  pairs = zip(video_io.read_frames(info_x), video_io.read_frames(info_y))
  count = 0
  for x_hwc, y_hwc in itertools.islice(pairs, frames):
    for name, value in fn(params, x_hwc, y_hwc).items():
      per_frame.setdefault(name, []).append(float(value))
    count += 1
  if count != frames:
    raise InputError(f"decoded {count} frame pairs, expected {frames} ({restored}, {reference})")
  result = {"restored": restored, "reference": reference, "frames": frames,
            "crop_border": crop_border}
  result.update({name: float(np.mean(values)) for name, values in per_frame.items()})
  result["per_frame"] = per_frame
  return result


def run_cli(restored: str, reference: str, *, crop_border: int = 0,
            max_frames: int | None = None, json_path: str | None = None,
            with_lpips: bool = True, overwrite: bool = False) -> dict:
  """`evaluate`, then one printed line of means and optionally a JSON file of everything."""
  if json_path and os.path.exists(json_path) and not overwrite:
    raise InputError(f"{json_path} exists (pass --overwrite to replace it)")
  result = evaluate(restored, reference, crop_border=crop_border, max_frames=max_frames,
                    with_lpips=with_lpips)
  means = " ".join(f"{k}={result[k]:.4f}" for k in ("psnr", "ssim", "lpips") if k in result)
  print(f"frames={result['frames']} {means}")
  if json_path:  # identical frames: psnr is Infinity
    atomic.write_text(json_path, json.dumps(result, indent=1), overwrite=overwrite)
  return result
