"""Shared parts of the builders: clip folders -> PNG frame sequences, GT/LQ pairing, the
fixed-seed LQ synthesis of the paper's synthetic benchmarks, and the feature specs.

Clips are stored as sequences of PNG frames: lossless, smaller than compressed raw tensors at
about the same decoding cost (docs/benchmarks.md); PNG frame folders are stored byte for byte,
without re-encoding.
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import tensorflow_datasets as tfds

from seedvr2_jax.data import degradations, png, video_io
from seedvr2_jax.errors import InputError

# Benchmark LQ clips: x4 with the training degradation ("realesrgan" preset), seeded per clip
# from (LQ_SEED, CRC32 of the clip name), so every build gives the same LQ clips.
LQ_SEED = 20250606
LQ_PRESET = "realesrgan"


def frames_feature() -> tfds.features.Sequence:
  """A clip: variable-length sequence of PNG-encoded frames."""
  return tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_))


def features(*names: str) -> tfds.features.FeaturesDict:
  """Clip features `names` (e.g. "hq", "lq") plus `name` and `fps`."""
  return tfds.features.FeaturesDict({
      **{n: frames_feature() for n in names},
      "name": tfds.features.Text(),
      "fps": tfds.features.Scalar(dtype=np.float32),
  })


def find_dir(root: str, candidates: tuple[str, ...], what: str) -> str:
  """The first of `root/candidate` that exists ("." = root itself); InputError otherwise."""
  for c in candidates:
    path = os.path.normpath(os.path.join(root, c))
    if os.path.isdir(path):
      return path
  raise InputError(f"{root}: no {what} folder (looked for {', '.join(candidates)})")


def list_clips(folder: str) -> dict[str, str]:
  """{clip name: path}: sub-folders of frames and video files of `folder`, by name."""
  clips = {}
  for entry in sorted(os.listdir(folder)):
    path = os.path.join(folder, entry)
    stem, ext = os.path.splitext(entry)
    if entry.startswith("."):
      continue
    if os.path.isdir(path):
      clips[entry] = path
    elif ext.lower() in video_io.VIDEO_EXTENSIONS:
      clips[stem] = path
  if not clips:
    raise InputError(f"{folder}: holds no clips (frame folders or videos)")
  return clips


def pair_clips(gt: dict[str, str], lq: dict[str, str], lq_dir: str) -> None:
  missing = sorted(set(gt) - set(lq))
  if missing:
    raise InputError(f"{lq_dir}: no LQ clip for {len(missing)} GT clip(s): "
                     f"{', '.join(missing[:5])}")


def read_pngs(path: str) -> tuple[list[bytes], float]:
  """A clip (frame folder or video) -> (PNG frames, fps). PNG frame files are kept as they
  are; other frames are decoded and encoded as PNG."""
  info = video_io.probe(path)
  if info.kind == "frames":
    files = sorted(f for f in os.listdir(path) if f.lower().endswith(video_io.IMAGE_EXTENSIONS))
    if all(f.lower().endswith(".png") for f in files):
      frames = []
      for f in files:
        with open(os.path.join(path, f), "rb") as fh:
          frames.append(fh.read())
      if any(png.size(f) != (info.height, info.width) for f in frames):
        raise InputError(f"{path}: frame sizes differ")
      return frames, float(info.fps)
  return [png.encode(f) for f in video_io.read_frames(info)], float(info.fps)


def crop_to_multiple(clip_thwc: np.ndarray, multiple: int) -> np.ndarray:
  """Centre crop of height and width down to multiples of `multiple`."""
  h, w = clip_thwc.shape[1:3]
  top, left = (h % multiple) // 2, (w % multiple) // 2
  return clip_thwc[:, top:top + h - h % multiple, left:left + w - w % multiple]


def degrade_fixed(name: str, hq_thwc: np.ndarray) -> np.ndarray:
  """The benchmark LQ clip of clip `name` (H, W multiples of 4): fixed-seed x4 degradation."""
  rng = np.random.default_rng([LQ_SEED, zlib.crc32(name.encode())])
  return degradations.degrade_clip(np.ascontiguousarray(hq_thwc), degradations.preset(LQ_PRESET),
                                   rng)


def synthesize_lq(name: str, hq_pngs: list[bytes]) -> tuple[list[bytes], list[bytes]]:
  """(HQ, LQ) PNG frames: HQ centre-cropped to multiples of 4 (re-encoded only when cropped),
  LQ its `degrade_fixed` clip."""
  hq = png.decode_frames(hq_pngs)
  cropped = crop_to_multiple(hq, degradations.preset(LQ_PRESET).scale)
  if cropped.shape != hq.shape:
    hq_pngs = [png.encode(f) for f in cropped]
  return hq_pngs, [png.encode(f) for f in degrade_fixed(name, cropped)]
