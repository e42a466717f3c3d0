"""Official SeedVR2 pre-processing of LQ frames: resize, crop to /16, normalise, pad to 4n+1.

`size_mode="pad"` replaces the official crop: frames are reflect-padded up to the next multiple
of 16 and the restored frames cropped back (`pad_box`), so the output is exactly the requested
size. Reflection rather than edge replication: the padding is seen by the VAE's 3x3 convs and
the DiT's attention, and a mirrored border continues the image's texture and gradients where
replicated rows would add flat streaks unlike anything in training crops.

Frames are (T, H, W, C) float in [0, 1]. Resizing is bicubic with antialiasing (torchvision's
tensor resize = PIL-style Keys a=-0.5 kernel scaled by the downsampling factor;
`jax.image.resize(method="cubic", antialias=True)` matches it to 4e-7).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from seedvr2_jax.errors import InputError

CROP_MULTIPLE = 16


def area_size(height: int, width: int, area: float) -> tuple[int, int]:
  """Official AreaResize: keep the aspect ratio, scale to about `area` pixels (Python round)."""
  scale = math.sqrt(area / (height * width))
  return round(height * scale), round(width * scale)


def output_size(height: int, width: int, *, resolution: tuple[int, int] | None = None,
                short_side: int | None = None, scale: float | None = None) -> tuple[int, int]:
  """Resized (h, w) before the /16 crop. Exactly one option: `resolution` (h, w) = official
  area resize to h*w pixels, `short_side` = short side to N, `scale` = both sides times S."""
  if sum(v is not None for v in (resolution, short_side, scale)) != 1:
    raise InputError("give exactly one of resolution, short_side or scale")
  if resolution is not None:
    size = area_size(height, width, resolution[0] * resolution[1])
  elif short_side is not None:
    size = area_size(height, width, short_side ** 2 * max(height, width) / min(height, width))
  else:
    size = round(height * scale), round(width * scale)
  cropped = tuple(s - s % CROP_MULTIPLE for s in size)
  if min(cropped) < CROP_MULTIPLE:
    raise InputError(f"output size {size[0]}x{size[1]} is too small: each side needs at least "
                     f"{CROP_MULTIPLE} pixels")
  return size


def crop_box(height: int, width: int) -> tuple[int, int, int, int]:
  """(top, left, h, w) of the official centre crop to multiples of 16 (torchvision rounding)."""
  h, w = height - height % CROP_MULTIPLE, width - width % CROP_MULTIPLE
  return int(round((height - h) / 2)), int(round((width - w) / 2)), h, w


def pad_box(height: int, width: int) -> tuple[int, int, int, int]:
  """(top, left, h, w): a `height` x `width` frame sits at (top, left) of the h x w frame
  padded up to multiples of 16 (centred; the odd pixel goes to the bottom / right)."""
  h, w = -(-height // CROP_MULTIPLE) * CROP_MULTIPLE, -(-width // CROP_MULTIPLE) * CROP_MULTIPLE
  return (h - height) // 2, (w - width) // 2, h, w


def model_size(size: tuple[int, int], size_mode: str = "crop") -> tuple[int, int]:
  """The (h, w) the model runs at for resized frames of `size`: cropped or padded to /16."""
  return (crop_box if size_mode == "crop" else pad_box)(*size)[2:]


def preprocess(frames_thwc: jnp.ndarray, size: tuple[int, int],
               size_mode: str = "crop") -> jnp.ndarray:
  """[0, 1] frames -> resized to `size`, clamped, centre-cropped to /16 (official) or
  reflect-padded to /16 (`size_mode="pad"`), in [-1, 1]."""
  t, _, _, c = frames_thwc.shape
  x = jax.image.resize(frames_thwc.astype(jnp.float32), (t, *size, c), method="cubic",
                       antialias=True)
  x = jnp.clip(x, 0.0, 1.0)
  if size_mode == "crop":
    top, left, h, w = crop_box(*size)
    x = x[:, top:top + h, left:left + w]
  else:
    top, left, h, w = pad_box(*size)
    x = jnp.pad(x, ((0, 0), (top, h - size[0] - top), (left, w - size[1] - left), (0, 0)),
                mode="reflect")
  return x * 2.0 - 1.0


def padded_length(frames: int, temporal_factor: int = 4) -> int:
  """Official `cut_videos`: 1 stays 1; fewer than 5 -> 5; else the next 4n+1."""
  if frames == 1:
    return 1
  if frames <= temporal_factor:
    return temporal_factor + 1
  return frames + (-(frames - 1)) % temporal_factor


def pad_frames(x_thwc: jnp.ndarray, temporal_factor: int = 4) -> jnp.ndarray:
  """Repeats the last frame up to `padded_length` frames."""
  extra = padded_length(x_thwc.shape[0], temporal_factor) - x_thwc.shape[0]
  if not extra:
    return x_thwc
  return jnp.concatenate([x_thwc, jnp.repeat(x_thwc[-1:], extra, axis=0)], axis=0)
