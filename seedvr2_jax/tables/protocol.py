"""The evaluation protocol of `tables` (docs/tables.md): which datasets, how large the output
is, how the reference is cropped, and the bicubic baseline.

SeedVR2's Table 1: synthetic sets degraded as in training, x4, evaluated at 720p; real sets
(VideoLQ) with the output capped at 1080p, duration unchanged. Here the output is 4x the LQ
clip, its short side capped at `cap` (720 for sets with ground truth, 1080 for VideoLQ), then
centre-cropped to multiples of 16 as the restore pipeline does; the ground truth is brought to
the same size (resized only when it differs, with the pipeline's antialiased bicubic) and
cropped by the same box.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from seedvr2_jax.errors import ConfigError
from seedvr2_jax.infer import preprocess

SCALE = 4


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A tfds builder of `seedvr2_jax.data.tfds_builders` and how `tables` evaluates it."""

  builder: str  # the tfds name, with an optional "/config"
  split: str
  has_reference: bool
  cap: int  # largest output short side

  @property
  def name(self) -> str:
    return self.builder.split("/")[0]


_SPECS = {"spmcs": ("test", True, 720), "udm10": ("test", True, 720),
          "reds30": ("test", True, 720), "youhq40": ("test", True, 720),
          "videolq": ("test", False, 1080), "seedvr2_samples": ("train", True, 720)}
DATASETS = tuple(_SPECS)


def dataset(builder: str) -> DatasetSpec:
  """"udm10", "seedvr2_samples/small", ... -> its spec; ConfigError for an unknown name."""
  name = builder.split("/")[0]
  if name not in _SPECS:
    raise ConfigError(f"unknown dataset {builder!r}: choose from {', '.join(DATASETS)}")
  return DatasetSpec(builder, *_SPECS[name])


def output_request(lq_height: int, lq_width: int, cap: int) -> dict:
  """The restore size option: {"scale": 4}, or {"short_side": cap} where 4x exceeds `cap`."""
  if SCALE * min(lq_height, lq_width) <= cap:
    return {"scale": float(SCALE)}
  return {"short_side": cap}


def output_size(lq_height: int, lq_width: int, cap: int) -> tuple[int, int]:
  """(h, w) of the restored clip before the /16 centre crop."""
  return preprocess.output_size(lq_height, lq_width, **output_request(lq_height, lq_width, cap))


def resize_and_crop(frames_thwc: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """uint8 (T, H, W, 3) -> uint8 frames resized to `size` (the pipeline's antialiased bicubic,
  skipped when already that size) and centre-cropped to /16 as the restored output is."""
  top, left, h, w = preprocess.crop_box(*size)
  if frames_thwc.shape[1:3] == tuple(size):
    return frames_thwc[:, top:top + h, left:left + w]
  x = preprocess.preprocess(jnp.asarray(frames_thwc, jnp.float32) / 255.0, size)
  return np.asarray(jnp.round((x + 1.0) * 127.5)).astype(np.uint8)


def describe() -> dict:
  """The protocol, as recorded in results.json."""
  return {
      "scale": SCALE,
      "output": "4x the LQ clip, short side capped at 720 (sets with ground truth) or 1080 "
                "(VideoLQ); resize then centre crop to multiples of 16 (restore pipeline)",
      "reference": "ground truth resized to the output size only when it differs (antialiased "
                   "bicubic), cropped by the output's box",
      "outputs": "lossless PNG frames, scored as written",
      "scores": "pyiqa conventions; per-frame metrics averaged over a clip's frames, clip-level "
                "ones (DOVER) once per clip; dataset value = mean over clips",
      "bicubic": "the LQ clip resized by the pipeline's antialiased bicubic to the output size",
  }
