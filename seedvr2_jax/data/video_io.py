"""Video and image I/O with PyAV: streaming reads, video / PNG writes that land atomically.

Inputs: a video file (anything FFmpeg demuxes: mp4, mkv, mov, webm, avi, ...), a single image,
or a folder of PNG/JPG frames (sorted by name). Frames are (H, W, 3) uint8 RGB, yielded one at a
time so host memory does not grow with the video length. Outputs: a video (mp4/mov/mkv/webm,
each with its own muxer; codec and pixel format from `video_formats`, 8 or 10 bits; the input
frame rate; the input's audio carried by `audio_track`) or a folder of 8- or 16-bit PNGs; both
are written under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fractions
import os
from collections.abc import Iterator

import av
import numpy as np

from seedvr2_jax.data import audio_track, video_formats
from seedvr2_jax.errors import InputError
from seedvr2_jax.utils import atomic

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# Video files taken as clips when listing folders (`probe` opens anything FFmpeg demuxes).
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts")
# Video file names `degrade` writes to (H.264 / HEVC / MPEG-4 codec passes; `restore` writes the
# containers of `video_formats.CONTAINERS`).
WRITABLE_VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov")
PNG_BITS = (8, 16)
DEFAULT_FPS = fractions.Fraction(25)


@dataclasses.dataclass(frozen=True)
class MediaInfo:
  """What a reader found: kind is "video", "image" or "frames" (a folder of images)."""

  path: str
  kind: str
  width: int
  height: int
  frames: int
  fps: fractions.Fraction
  has_audio: bool


def _frame_files(folder: str) -> list[str]:
  files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
  return [os.path.join(folder, f) for f in files]


def _decode_one(path: str) -> np.ndarray:
  try:
    with av.open(path) as container:
      return next(container.decode(video=0)).to_ndarray(format="rgb24")
  except (av.FFmpegError, StopIteration, IndexError, UnicodeDecodeError) as e:
    raise InputError(f"{path}: not a readable image ({type(e).__name__})") from None


def probe(path: str) -> MediaInfo:
  """Inspects `path` without decoding the whole stream; InputError if it is unusable."""
  if os.path.isdir(path):
    files = _frame_files(path)
    if not files:
      raise InputError(f"{path}: folder holds no {'/'.join(IMAGE_EXTENSIONS)} frames")
    first = _decode_one(files[0])
    return MediaInfo(path, "frames", first.shape[1], first.shape[0], len(files), DEFAULT_FPS,
                     False)
  if not os.path.exists(path):
    raise InputError(f"{path}: no such file or folder")
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise InputError(f"{path}: holds no video stream (not a video or image)")
      stream = container.streams.video[0]
      is_image = path.lower().endswith(IMAGE_EXTENSIONS)
      # Count packets (one per frame) rather than trust the container's frame count.
      frames = 1 if is_image else sum(1 for p in container.demux(stream) if p.size)
      fps = stream.average_rate or stream.guessed_rate or DEFAULT_FPS
      info = MediaInfo(path, "image" if is_image else "video", stream.codec_context.width,
                       stream.codec_context.height, frames, fractions.Fraction(fps),
                       bool(container.streams.audio))
  except av.FFmpegError as e:
    raise InputError(f"{path}: not a readable video or image ({e.__class__.__name__})") from None
  if not info.width or not info.height:
    raise InputError(f"{path}: video stream has no frame size")
  if not info.frames:
    raise InputError(f"{path}: holds zero frames")
  return info


def read_frames(info: MediaInfo) -> Iterator[np.ndarray]:
  """Yields (H, W, 3) uint8 frames one at a time."""
  if info.kind == "frames":
    for file in _frame_files(info.path):
      frame = _decode_one(file)
      if frame.shape[:2] != (info.height, info.width):
        raise InputError(f"{file}: frame size {frame.shape[1]}x{frame.shape[0]} differs from "
                         f"the first frame's {info.width}x{info.height}")
      yield frame
    return
  try:
    with av.open(info.path) as container:
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"
      for frame in container.decode(stream):
        yield frame.to_ndarray(format="rgb24")
  except av.FFmpegError as e:
    raise InputError(f"{info.path}: decoding failed ({e.__class__.__name__}: {e})") from None


def read_video(info: MediaInfo, start: int, span: int) -> list[np.ndarray]:
  """Up to `span` (H, W, 3) uint8 frames of a video from frame `start`: seeks to the keyframe
  before it, then decodes forward (frame numbers from timestamps, constant frame rate
  assumed)."""
  frames = []
  with av.open(info.path) as container:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    origin, base = stream.start_time or 0, stream.time_base
    if start:
      container.seek(int(origin + start / info.fps / base), stream=stream, backward=True)
    for frame in container.decode(stream):
      if frame.pts is not None and round((frame.pts - origin) * base * info.fps) < start:
        continue
      frames.append(frame.to_ndarray(format="rgb24"))
      if len(frames) == span:
        break
  return frames


class VideoWriter:
  """Writes frames to a video (mp4/mov/mkv/webm, each with its own muxer; `video_formats`) or a
  PNG folder (8 or 16 bits); nothing appears at `path` until `close()` succeeds, and an existing
  `path` is only replaced with `overwrite`. Use as a context manager: an exception discards the
  partial output. Frames are uint8, or uint16 for formats deeper than 8 bits (`bits`).

  `audio_from`: a file whose first audio stream is copied, or transcoded where the container
  cannot hold its codec (`audio_track`), interleaved with the frames as they are written.
  """

  def __init__(self, path: str, fps: fractions.Fraction, *, crf: int = 18,
               audio_from: str | None = None, overwrite: bool = False,
               codec: str | None = None, pix_fmt: str | None = None, png_bits: int = 8):
    self.path, self.fps, self.crf, self.audio_from = path, fps, crf, audio_from
    self.to_frames = not os.path.splitext(path)[1]
    if png_bits not in PNG_BITS:
      raise InputError(f"PNG frames are 8 or 16 bits, not {png_bits}")
    self.format = None if self.to_frames else video_formats.video_format(path, codec, pix_fmt)
    self.bits = png_bits if self.to_frames else self.format.bits
    if os.path.exists(path) and not overwrite:
      raise InputError(f"{path} exists (pass --overwrite to replace it)")
    self.tmp = atomic.temporary_path(path)
    self._container = self._stream = self.audio = None
    self.count = 0
    if self.to_frames:
      os.makedirs(self.tmp)

  def write(self, frame: np.ndarray) -> None:
    """One (H, W, 3) frame: uint8, or uint16 when `bits` > 8."""
    frame = _to_bits(frame, self.bits)
    if self.to_frames:
      _write_still(os.path.join(self.tmp, f"{self.count:06d}.png"), frame)
    else:
      if self._container is None:
        self._open(frame.shape[1], frame.shape[0])
      rgb = av.VideoFrame.from_ndarray(frame, format="rgb24" if self.bits == 8 else "rgb48le")
      self._container.mux(self._stream.encode(rgb))
      if self.audio is not None:
        self.audio.mux_until(self._container, (self.count + 1) / self.fps)
    self.count += 1

  def _open(self, width: int, height: int) -> None:
    fmt = self.format
    multiple_h, multiple_w = video_formats.size_multiples(fmt.pix_fmt)
    if height % multiple_h or width % multiple_w:
      raise InputError(f"{fmt.pix_fmt} needs even frame sizes, got {width}x{height} (use "
                       f"--pix-fmt yuv444p, or a PNG folder)")
    self._container = av.open(self.tmp, mode="w", format=fmt.muxer)
    self._stream = self._container.add_stream(fmt.encoder, rate=self.fps)
    self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, fmt.pix_fmt
    self._stream.thread_type = "AUTO"
    if fmt.encoder in video_formats.CRF_ENCODERS:
      self._stream.options = {"crf": str(self.crf)} | (
          {"b:v": "0"} if fmt.encoder == "libvpx-vp9" else {})  # VP9: constant quality
    if fmt.encoder == "libx265":
      self._stream.options |= {"x265-params": "log-level=error"}
    if self.audio_from:  # streams must exist before the first packet is muxed
      self.audio = audio_track.AudioTrack(self.audio_from, self._container)

  def close(self) -> None:
    if self.to_frames:
      atomic.commit(self.tmp, self.path)
      return
    if self._container is None:
      raise InputError(f"{self.path}: no frames to write")
    self._container.mux(self._stream.encode())
    if self.audio is not None:
      self.audio.finish(self._container, self.count / self.fps)
    self._container.close()
    atomic.commit(self.tmp, self.path)

  def discard(self) -> None:
    for part in (self.audio, self._container):
      if part is not None:
        part.close()
    atomic.discard(self.tmp)

  @contextlib.contextmanager
  def discarded_on_error(self):
    """The partial output is discarded if the block raises (a writer used across calls)."""
    try:
      yield self
    except BaseException:
      self.discard()
      raise

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      self.close()
    else:
      self.discard()
    return False


def _to_bits(frame: np.ndarray, bits: int) -> np.ndarray:
  """A uint8 or uint16 frame as uint8 (bits 8) or uint16 (deeper), rounding to nearest."""
  if bits == 8:
    return frame if frame.dtype == np.uint8 else (
        (frame.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
  return frame.astype(np.uint16) * 257 if frame.dtype == np.uint8 else frame


def _write_still(path: str, frame: np.ndarray, codec: str = "png", pix_fmt: str | None = None):
  """A uint8 (8-bit) or uint16 (16-bit PNG) frame as one image file."""
  deep = frame.dtype == np.uint16
  with av.open(path, mode="w", format="image2") as container:
    stream = container.add_stream(codec)
    stream.width, stream.height = frame.shape[1], frame.shape[0]
    stream.pix_fmt = pix_fmt or ("rgb48be" if deep else "rgb24")
    rgb = av.VideoFrame.from_ndarray(frame, format="rgb48le" if deep else "rgb24")
    container.mux(stream.encode(rgb))
    container.mux(stream.encode())


def write_image(path: str, frame: np.ndarray) -> None:
  """A single image (PNG: 8 or 16 bits by the frame's dtype; JPEG for other extensions, 8
  bits), written atomically."""
  with atomic.atomic_path(path) as tmp:
    if path.lower().endswith(".png"):
      _write_still(tmp, frame)
    else:
      _write_still(tmp, _to_bits(frame, 8), "mjpeg", "yuvj444p")
