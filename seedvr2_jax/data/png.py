"""PNG bytes <-> (H, W, 3) uint8 frames in memory (PyAV codec contexts), for datasets that store
clips as sequences of encoded frames."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import av
import numpy as np

from seedvr2_jax.errors import InputError

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode(frame: np.ndarray) -> bytes:
  """(H, W, 3) uint8 -> lossless PNG bytes."""
  codec = av.CodecContext.create("png", "w")
  codec.width, codec.height, codec.pix_fmt = frame.shape[1], frame.shape[0], "rgb24"
  packets = codec.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), "rgb24"))
  return b"".join(bytes(p) for p in packets + codec.encode(None))


def decode(data: bytes) -> np.ndarray:
  """PNG bytes (any bit depth / colour type) -> (H, W, 3) uint8 RGB."""
  try:
    frames = av.CodecContext.create("png", "r").decode(av.Packet(data))
  except av.FFmpegError as e:
    raise InputError(f"not a readable PNG ({e.__class__.__name__})") from None
  if not frames:
    raise InputError("not a readable PNG (no frame decoded)")
  return frames[0].to_ndarray(format="rgb24")


def decode_frames(frames: Sequence[bytes]) -> np.ndarray:
  """A sequence of PNG frames -> (T, H, W, 3) uint8."""
  return np.stack([decode(f) for f in frames])


def size(data: bytes) -> tuple[int, int]:
  """(height, width) from the PNG header, without decoding."""
  if data[:8] != _SIGNATURE or len(data) < 24:
    raise InputError("not a PNG (bad signature)")
  width, height = struct.unpack(">II", data[16:24])
  return height, width
