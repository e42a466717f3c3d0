"""A video or image -> its synthetic LQ version, as training sees it (`seedvr2-jax degrade`).

The input is centre-cropped to a multiple of the scale (twice the scale for videos, so the LQ
size is even for 4:2:0), degraded as ONE clip (one parameter draw for the whole video) in chunks
of frames, and written at 1/scale of that size. For a video, the degradation's own codec pass is
the output file: the drawn codec at the drawn CRF or bitrate, at the input frame rate, so
decoding the file gives exactly the degraded frames (`degrade_clip` of the cropped input with the
same seed, when the input is at the config's fps). Exceptions, stored as near-lossless H.264: a
video drawn without compression, and LQ frames with a side under `compression.MIN_CODED_SIZE`
pixels (their codec pass runs padded, in memory). Images are written as the second stage leaves
them (PNG is lossless). Outputs land atomically; an existing output is only replaced with
`overwrite`.
"""

from __future__ import annotations

import dataclasses
import itertools
import os

import av
import ml_collections
import numpy as np

from seedvr2_jax.data import compression, degradations, video_io
from seedvr2_jax.errors import InputError
from seedvr2_jax.utils import atomic

FRAMES_PER_READ = 8
NEAR_LOSSLESS_CRF = 12  # H.264 when the file cannot be the codec pass itself


def _chunks(frames, size: int):
  while chunk := list(itertools.islice(frames, size)):
    yield np.stack(chunk)


def _write_encoded(path: str, lq_chunks, spec: compression.VideoSpec, lq_hw: tuple[int, int]):
  """Encodes the LQ frames with `spec` into `path` (via a temporary name)."""
  with atomic.atomic_path(path) as tmp, av.open(tmp, mode="w") as container:
    stream = container.add_stream(spec.codec, rate=spec.fps)
    spec.configure(stream.codec_context, lq_hw[1], lq_hw[0])
    pts = 0
    for chunk in lq_chunks:
      for frame in chunk:
        container.mux(stream.encode(compression.to_yuv420(frame, pts)))
        pts += 1
    container.mux(stream.encode(None))


def degrade_file(input_path: str, output_path: str, cfg: ml_collections.ConfigDict, seed: int,
                 overwrite: bool = False) -> tuple[degradations.ClipParams, int]:
  """Writes the degraded version of a video (to a WRITABLE_VIDEO_EXTENSIONS file) or image (to
  an image file); returns the parameters drawn and the number of frames written."""
  if os.path.exists(output_path) and not overwrite:
    raise InputError(f"{output_path}: already exists (pass --overwrite to replace it)")
  info = video_io.probe(input_path)
  is_image = info.kind == "image"
  allowed = video_io.IMAGE_EXTENSIONS if is_image else video_io.WRITABLE_VIDEO_EXTENSIONS
  if os.path.splitext(output_path)[1].lower() not in allowed:
    raise InputError(f"{output_path}: the output of a{'n image' if is_image else ' video'} "
                     f"input must end in {'/'.join(allowed)}")
  unit = cfg.scale if is_image else 2 * cfg.scale
  h, w = info.height // unit * unit, info.width // unit * unit
  if not h or not w:
    raise InputError(f"{input_path}: {info.width}x{info.height} is smaller than {unit}x{unit}")
  top, left = (info.height - h) // 2, (info.width - w) // 2
  rng = np.random.default_rng(seed)
  params = degradations.sample_params(cfg, rng, (h, w), frames=info.frames)
  rngs = rng.spawn(info.frames)
  frames = (f[top:top + h, left:left + w]
            for f in itertools.islice(video_io.read_frames(info), info.frames))
  if is_image:
    video_io.write_image(output_path, degradations.degrade_frames(next(frames)[None], params,
                                                                  rngs)[0])
    return params, 1
  written = 0

  def lq_chunks():
    nonlocal written
    for chunk in _chunks(frames, FRAMES_PER_READ):
      n = len(chunk)
      yield degradations.degrade_frames(chunk, params.frames(written, written + n),
                                        rngs[written:written + n])
      written += n

  spec = None if params.video is None else dataclasses.replace(params.video, fps=info.fps)
  if spec is not None and min(params.lq_hw) >= compression.MIN_CODED_SIZE:
    _write_encoded(output_path, lq_chunks(), spec, params.lq_hw)
    return params, written
  lq_frames = itertools.chain.from_iterable(lq_chunks())
  if spec is not None:  # small frames: the codec pass runs padded, in memory, as in training
    lq_frames = compression.video(np.stack(list(lq_frames)), spec)
  with video_io.VideoWriter(output_path, info.fps, crf=NEAR_LOSSLESS_CRF,
                            overwrite=overwrite) as writer:
    for frame in lq_frames:
      writer.write(frame)
  return params, written


def degrade_with_preset(input_path: str, output_path: str,
                        preset_name: str = degradations.DEFAULT_PRESET, *,
                        scale: int | None = None, seed: int = 0, overwrite: bool = False,
                        log=print) -> degradations.ClipParams:
  """`degrade_file` with degradation preset `preset_name` (its scale replaced by `scale` if
  given); logs what was written and drawn, returns the parameters drawn."""
  cfg = degradations.preset(preset_name)
  if scale is not None:
    if scale < 1:
      raise InputError(f"--scale must be a positive integer, got {scale}")
    cfg = degradations.override(cfg, {"scale": scale})
  params, frames = degrade_file(input_path, output_path, cfg, seed, overwrite)
  h, w = params.lq_hw
  log(f"wrote {output_path}: {frames} frame{'s' * (frames != 1)} of {w}x{h} "
      f"(preset {preset_name}, scale {cfg.scale}, seed {seed})")
  log(f"drawn: {params.summary()}")
  return params
