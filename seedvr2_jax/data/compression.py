"""Lossy compression round trips: baseline JPEG per frame (numpy) and video codecs (PyAV).

`jpeg` is the baseline JPEG codec of libjpeg / OpenCV `imencode` (what Real-ESRGAN calls) in
numpy: 8-bit input, JFIF YCbCr, 4:2:0 chroma (2x2 mean), 8x8 DCT, the IJG quality-scaled
Annex K tables, fancy (triangle) chroma upsampling on decode, 8-bit output. It runs on a whole
planar (T, 3, H, W) clip at once, each frame with its own quality.
`video` encodes (T, H, W, 3) uint8 frames with libx264 / libx265 / mpeg4 (a `VideoSpec`) in
memory and decodes them back (same frame count and size).
"""

from __future__ import annotations

import dataclasses
import fractions

import av
import numpy as np

VIDEO_CODECS = {"libx264": "h264", "libx265": "hevc", "mpeg4": "mpeg4"}  # encoder -> decoder
CRF_CODECS = ("libx264", "libx265")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
           "veryslow")  # x264 / x265 speed presets
# Frames are edge-padded to at least this many pixels on each side before encoding: libx265 is
# not deterministic on smaller noisy pictures (docs/benchmarks.md).
MIN_CODED_SIZE = 128

_LUMA_TABLE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float32)
_CHROMA_TABLE = np.full(64, 99, np.float32)
_CHROMA_TABLE[[0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 24, 25]] = (
    17, 18, 24, 47, 18, 21, 26, 66, 24, 26, 56, 47, 66)
RGB_TO_YCC = np.array([[0.299, 0.587, 0.114],
                        [-0.168735892, -0.331264108, 0.5],
                        [0.5, -0.418687589, -0.081312411]], np.float32)
YCC_TO_RGB = np.linalg.inv(RGB_TO_YCC.astype(np.float64)).astype(np.float32)


def _dct_matrix() -> np.ndarray:
  """(8, 8) orthonormal DCT-II: JPEG's 2-D transform is D @ block @ D.T."""
  k, n = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
  d = np.sqrt(2 / 8) * np.cos((2 * n + 1) * k * np.pi / 16)
  d[0] /= np.sqrt(2)
  return d.astype(np.float32)


DCT = _dct_matrix()


def quant_tables(quality_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(T,) IJG qualities 1..100 -> (T, 8, 8) luma and chroma quantisation tables."""
  q = np.clip(np.asarray(quality_t, np.int64), 1, 100)
  percent = np.where(q < 50, 5000 // q, 200 - 2 * q).astype(np.float32)[:, None]

  def scaled(table: np.ndarray) -> np.ndarray:
    return np.clip(np.floor((table * percent + 50) / 100), 1, 255).reshape(-1, 8, 8)

  return scaled(_LUMA_TABLE), scaled(_CHROMA_TABLE)


def _blocks_roundtrip(plane_nhw: np.ndarray, table_n88: np.ndarray) -> np.ndarray:
  """DCT, quantise, dequantise and inverse DCT of every 8x8 block of (N, H, W), H, W % 8 == 0,
  with one (8, 8) table per plane; returns the decoded samples, rounded and clamped to 8 bits.
  Each 1-D transform is one large matmul (the block axes stay where they are)."""
  n, h, w = plane_nhw.shape
  x = (plane_nhw.reshape(-1, 8) - 128.0) @ DCT.T  # along rows of each block
  x = x.reshape(n, h // 8, 8, w // 8, 8)
  coef = np.tensordot(DCT, x, axes=([1], [2]))  # along columns: (8 u, N, H/8, W/8, 8 v)
  table = table_n88.transpose(1, 0, 2)[:, :, None, None, :]
  np.divide(coef, table, out=coef)
  np.rint(coef, out=coef)
  np.multiply(coef, table, out=coef)
  x = np.tensordot(DCT.T, coef, axes=([1], [0])) @ DCT
  x += 128.0
  return _to_8bit(x.transpose(1, 2, 0, 3, 4).reshape(n, h, w))


def _to_8bit(x: np.ndarray) -> np.ndarray:
  """Rounds and clamps to 0..255, in place."""
  np.rint(x, out=x)
  return np.clip(x, 0.0, 255.0, out=x)


def _upsample2(x: np.ndarray, axis: int) -> np.ndarray:
  """libjpeg's fancy upsampling along `axis`: each output is 3/4 its nearest input plus 1/4 the
  next nearest (the edge input repeated at the borders)."""
  def every_other(start: int, stop: int | None = None) -> tuple[slice, ...]:
    return (slice(None),) * (axis % x.ndim) + (slice(start, stop, 2),)

  shape = list(x.shape)
  shape[axis] *= 2
  out = np.empty(shape, np.float32)
  quarter_step = 0.25 * np.diff(x, axis=axis)
  out[every_other(0)] = x
  out[every_other(2)] -= quarter_step
  out[every_other(1)] = x
  out[every_other(1, -1)] += quarter_step
  return out


def jpeg(x_tchw: np.ndarray, quality_t: np.ndarray) -> np.ndarray:
  """(T, 3, H, W) RGB float in [0, 1] -> JPEG-decoded float32 RGB (multiples of 1/255), each
  frame at its quality (T,) on the IJG 1..100 scale."""
  t, _, h, w = x_tchw.shape
  rgb = _to_8bit(np.clip(x_tchw, 0.0, 1.0) * np.float32(255))
  # Whole 16x16 macroblocks, edges replicated (as libjpeg).
  rgb = np.pad(rgb, ((0, 0), (0, 0), (0, -h % 16), (0, -w % 16)), mode="edge")
  hp, wp = rgb.shape[2:]
  ycc = (RGB_TO_YCC @ rgb.reshape(t, 3, hp * wp)).reshape(t, 3, hp, wp)
  c = ycc[:, 1:]
  chroma = 0.25 * (c[..., 0::2, 0::2] + c[..., 1::2, 0::2] + c[..., 0::2, 1::2]
                   + c[..., 1::2, 1::2]) + 128.0
  luma_table, chroma_table = quant_tables(quality_t)
  y = _blocks_roundtrip(ycc[:, 0], luma_table)[:, :h, :w]
  chroma = _blocks_roundtrip(chroma.reshape(2 * t, hp // 2, wp // 2),
                             np.repeat(chroma_table, 2, axis=0)) - 128.0
  chroma = _upsample2(_upsample2(chroma, 1), 2)[:, :h, :w].reshape(t, 2, h, w)
  ycc_out = np.concatenate([y[:, None], chroma], axis=1)
  rgb_out = (YCC_TO_RGB @ ycc_out.reshape(t, 3, h * w)).reshape(t, 3, h, w)
  return _to_8bit(rgb_out) / np.float32(255)


@dataclasses.dataclass(frozen=True)
class VideoSpec:
  """One video compression: `codec` at `crf` (x264/x265), else at `bpp` bits per pixel per frame
  (bitrate = bpp * width * height * fps)."""

  codec: str
  crf: int | None = None
  bpp: float | None = None
  fps: fractions.Fraction = fractions.Fraction(25)
  preset: str = "medium"
  threads: int = 1

  def configure(self, enc: av.VideoCodecContext, width: int, height: int,
                pixels: int | None = None) -> None:
    """Sets size, yuv420p, rate and the rate control of an encoder (bare or a stream's); the
    bitrate is for `pixels` per frame (default: width x height)."""
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base, enc.framerate = 1 / self.fps, self.fps
    enc.thread_count = self.threads
    options = {}
    if self.codec in CRF_CODECS:
      options["preset"] = self.preset
    if self.codec == "libx265":
      options["x265-params"] = f"log-level=none:pools={self.threads}:frame-threads={self.threads}"
    if self.crf is not None:
      options["crf"] = str(self.crf)
    else:
      # x264 / x265 take whole kbit/s: tiny frames get at least 1 kbit/s.
      pixels = width * height if pixels is None else pixels
      enc.bit_rate = max(1000, round(self.bpp * pixels * self.fps))
      enc.bit_rate_tolerance = enc.bit_rate  # one second's worth (PyAV streams set their own)
    enc.options = options


def to_yuv420(frame_hwc: np.ndarray, pts: int) -> av.VideoFrame:
  """An (H, W, 3) uint8 frame as the encoder's input picture."""
  picture = av.VideoFrame.from_ndarray(frame_hwc, format="rgb24").reformat(format="yuv420p")
  picture.pts = pts
  return picture


def video(frames_thwc: np.ndarray, spec: VideoSpec) -> np.ndarray:
  """(T, H, W, 3) uint8 through an in-memory encode and decode. Frames are edge-padded to even
  sizes (4:2:0) of at least MIN_CODED_SIZE and cropped back after decoding."""
  t, h, w, _ = frames_thwc.shape
  pad_h, pad_w = max(MIN_CODED_SIZE, h + h % 2) - h, max(MIN_CODED_SIZE, w + w % 2) - w
  frames = np.pad(frames_thwc, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
  enc = av.CodecContext.create(spec.codec, "w")
  spec.configure(enc, frames.shape[2], frames.shape[1], pixels=h * w)
  # Out-of-band headers, as in an mp4 (rate control counts header bits): the same frames written
  # to a file (`degrade_file`) decode to what this returns.
  enc.flags |= av.codec.context.Flags.global_header
  packets = [p for i, frame in enumerate(frames) for p in enc.encode(to_yuv420(frame, i))]
  packets += enc.encode(None)
  dec = av.CodecContext.create(VIDEO_CODECS[spec.codec], "r")
  dec.thread_count = spec.threads
  if enc.extradata:
    dec.extradata = enc.extradata
  decoded = [f for p in packets for f in dec.decode(p)] + list(dec.decode(None))
  if len(decoded) != t:
    raise RuntimeError(f"{spec.codec} round trip returned {len(decoded)} of {t} frames")
  return np.stack([f.to_ndarray(format="rgb24") for f in decoded])[:, :h, :w]
