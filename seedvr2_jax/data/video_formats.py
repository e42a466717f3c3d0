"""Which video containers, codecs and pixel formats the writers produce, chosen by the output's
extension and the `--codec` / `--pix-fmt` options, checked against this PyAV build.

Each container is written by its own FFmpeg muxer (mp4, mov, matroska, webm). Defaults: H.264
for mp4/mov/mkv (what every player reads), VP9 for webm (the only family it holds here); the
pixel format defaults to 4:2:0 8-bit, except ProRes (4:2:2 10-bit, its smallest format).
"""

from __future__ import annotations

import dataclasses
import os

import av

from seedvr2_jax.errors import InputError

# Extension -> (FFmpeg muxer, codecs it is written with, default codec).
CONTAINERS = {
    ".mp4": ("mp4", ("h264", "hevc", "vp9"), "h264"),
    ".mov": ("mov", ("h264", "hevc", "prores"), "h264"),
    ".mkv": ("matroska", ("h264", "hevc", "prores", "ffv1", "vp9"), "h264"),
    ".webm": ("webm", ("vp9",), "vp9"),
}
CODECS = ("h264", "hevc", "prores", "ffv1", "vp9")
# Codec -> (FFmpeg encoder, default pixel format).
ENCODERS = {
    "h264": ("libx264", "yuv420p"),
    "hevc": ("libx265", "yuv420p"),
    "prores": ("prores_ks", "yuv422p10le"),
    "ffv1": ("ffv1", "yuv420p"),
    "vp9": ("libvpx-vp9", "yuv420p"),
}
# Encoders whose quality is set by a CRF (the others are lossless or profile-driven).
CRF_ENCODERS = ("libx264", "libx265", "libvpx-vp9")


@dataclasses.dataclass(frozen=True)
class VideoFormat:
  """How a video output is written: muxer, encoder, pixel format and its bits per sample."""

  muxer: str
  encoder: str
  pix_fmt: str
  bits: int


def bit_depth(pix_fmt: str) -> int:
  """Bits per sample of an FFmpeg pixel format (8 for yuv420p, 10 for yuv420p10le)."""
  return av.VideoFormat(pix_fmt).components[0].bits


def size_multiples(pix_fmt: str) -> tuple[int, int]:
  """(h, w) multiples that frame sizes of `pix_fmt` need: (2, 2) for 4:2:0, (1, 2) for 4:2:2,
  (1, 1) without chroma subsampling."""
  components = av.VideoFormat(pix_fmt, 4, 4).components
  return (max(4 // c.height for c in components), max(4 // c.width for c in components))


def video_format(path: str, codec: str | None = None, pix_fmt: str | None = None) -> VideoFormat:
  """The format of video output `path` (by extension); InputError if the container cannot hold
  `codec`, or the encoder (in this PyAV build) lacks it or `pix_fmt`."""
  ext = os.path.splitext(path)[1].lower()
  if ext not in CONTAINERS:
    raise InputError(f"{path}: not a video output (use {'/'.join(CONTAINERS)})")
  muxer, allowed, default = CONTAINERS[ext]
  codec = codec or default
  if codec not in allowed:
    raise InputError(f"{path}: {ext} holds {'/'.join(allowed)}, not {codec}")
  encoder, default_pix_fmt = ENCODERS[codec]
  try:
    formats = [f.name for f in av.Codec(encoder, "w").video_formats or ()]
  except av.codec.codec.UnknownCodecError:
    raise InputError(f"{codec}: this PyAV build lacks the {encoder} encoder") from None
  pix_fmt = pix_fmt or default_pix_fmt
  if pix_fmt not in formats:
    raise InputError(f"{codec} ({encoder}) cannot write pixel format {pix_fmt}; it takes "
                     f"{', '.join(formats)}")
  return VideoFormat(muxer, encoder, pix_fmt, bit_depth(pix_fmt))
