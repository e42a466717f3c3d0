"""Training degradations: an HQ clip -> its LQ clip, synthesised as SeedVR2 (after Upscale-A-Video).

Every frame goes through the Real-ESRGAN second-order model (basicsr `RealESRGANModel.feed_data`):
  stage 1: blur -> random resize -> Gaussian or Poisson noise -> JPEG
  stage 2: blur (prob. `second_blur_prob`) -> random resize (relative to the LQ size) -> noise
           -> [resize to LQ + final sinc, then JPEG] or [JPEG, then resize to LQ + final sinc]
then the whole clip goes through a video codec (libx264 / libx265 / mpeg4, random CRF or
bitrate). The parameters are drawn once per clip (`sample_params`), so all frames are degraded
alike; `jitter` > 0 varies noise strength and JPEG quality per frame by up to +-jitter
(relative). Clips are (T, H, W, 3) uint8 in and out; the work is planar (T, 3, H, W) float32 in
[0, 1], clipped where Real-ESRGAN clips and rounded to 8 bits at JPEG, at the end and by the
codec. Each frame's noise comes from its own generator, so degrading a clip in chunks of frames
gives the same result as degrading it whole (large frames are processed a few at a time).
"""

from __future__ import annotations

import dataclasses
import difflib
import fractions
import time
from collections.abc import Sequence

import ml_collections
import numpy as np
from scipy import fft as sp_fft

from seedvr2_jax.data import compression, kernels, noise
from seedvr2_jax.data.resize import RESIZE_MODES, resize
from seedvr2_jax.errors import ConfigError, InputError

_KERNEL_PROB = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
_STAGE_RANGES = ("blur_sigma", "betag_range", "betap_range", "resize_range", "noise_range",
                 "poisson_scale_range", "jpeg_range")  # and the same keys ending in 2
_VIDEO_RANGES = ("video.crf_range", "video.bpp_range")
# Frames degraded together: about 1M pixels, so the allocator reuses the float temporaries
# instead of mapping them anew for every clip (docs/benchmarks.md).
_CHUNK_PIXELS = 1 << 20

DEFAULT_PRESET = "realesrgan"
# Overrides of `default_config()`; "realesrgan" is the default itself.
PRESETS = {
    "realesrgan": {},
    "light": {
        "blur_sigma": (0.2, 1.5), "resize_prob": (0.1, 0.6, 0.3), "resize_range": (0.5, 1.5),
        "noise_range": (1.0, 10.0), "poisson_scale_range": (0.05, 1.0), "jpeg_range": (60, 95),
        "second_blur_prob": 0.5, "blur_sigma2": (0.2, 1.0), "resize_range2": (0.7, 1.2),
        "noise_range2": (1.0, 5.0), "poisson_scale_range2": (0.05, 0.5),
        "jpeg_range2": (70, 95), "final_sinc_prob": 0.5,
        "video.crf_range": (18, 25), "video.bpp_range": (0.1, 0.4),
    },
    "heavy": {
        "blur_sigma": (1.0, 4.0), "resize_prob": (0.1, 0.8, 0.1), "resize_range": (0.15, 1.2),
        "noise_range": (10.0, 40.0), "poisson_scale_range": (1.0, 4.0), "jpeg_range": (20, 50),
        "second_blur_prob": 1.0, "blur_sigma2": (0.5, 2.0), "resize_range2": (0.3, 1.0),
        "noise_range2": (5.0, 30.0), "poisson_scale_range2": (0.5, 3.0),
        "jpeg_range2": (20, 50),
        "video.crf_range": (30, 40), "video.bpp_range": (0.01, 0.05),
    },
}


def default_config() -> ml_collections.ConfigDict:
  """Real-ESRGAN x4 (train_realesrgan_x4plus.yml) plus video compression; locked, so a mistyped
  key fails. Keys ending in 2 are the second stage's."""
  cfg = ml_collections.ConfigDict({
      "scale": 4,
      "kernel_sizes": kernels.KERNEL_SIZES,  # blur and sinc kernel sizes (odd)
      "resize_modes": RESIZE_MODES,  # chosen uniformly at each resize
      "kernel_list": kernels.KERNEL_TYPES, "kernel_prob": _KERNEL_PROB, "sinc_prob": 0.1,
      "blur_sigma": (0.2, 3.0), "betag_range": (0.5, 4.0), "betap_range": (1.0, 2.0),
      "resize_prob": (0.2, 0.7, 0.1),  # up, down, keep
      "resize_range": (0.15, 1.5),
      "gaussian_noise_prob": 0.5,  # else Poisson
      "noise_range": (1.0, 30.0),  # Gaussian sigma on the 0..255 scale
      "poisson_scale_range": (0.05, 3.0), "gray_noise_prob": 0.4,
      "jpeg_range": (30, 95),  # IJG quality
      "second_blur_prob": 0.8,
      "kernel_list2": kernels.KERNEL_TYPES, "kernel_prob2": _KERNEL_PROB, "sinc_prob2": 0.1,
      "blur_sigma2": (0.2, 1.5), "betag_range2": (0.5, 4.0), "betap_range2": (1.0, 2.0),
      "resize_prob2": (0.3, 0.4, 0.3), "resize_range2": (0.3, 1.2),
      "gaussian_noise_prob2": 0.5, "noise_range2": (1.0, 25.0),
      "poisson_scale_range2": (0.05, 2.5), "gray_noise_prob2": 0.4, "jpeg_range2": (30, 95),
      "final_sinc_prob": 0.8,
      "jitter": 0.0,  # per-frame relative variation of noise strength and JPEG quality
      "video": {
          "prob": 1.0,  # chance that a clip is compressed
          "min_frames": 2,  # shorter clips (images) are not
          "codecs": tuple(compression.VIDEO_CODECS),
          "codec_probs": (1 / 3, 1 / 3, 1 / 3),
          "crf_prob": 0.5,  # x264/x265 use a CRF with this chance, else a bitrate (mpeg4: always)
          "crf_range": (18, 35),
          "bpp_range": (0.02, 0.2),  # bitrate in bits per pixel per frame
          "fps": 25,
          "preset": "medium",
          "threads": 1,
      },
  })
  cfg.lock()
  return cfg


def override(cfg: ml_collections.ConfigDict, updates: dict) -> ml_collections.ConfigDict:
  """A copy of `cfg` with `updates` ({"noise_range": (1, 10), "video.crf_range": (20, 30)});
  ConfigError for an unknown key or a value of the wrong type."""
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  cfg.lock()
  for key, value in updates.items():
    path = key.split(".")
    node = cfg
    for depth, part in enumerate(path):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        known = list(node) if isinstance(node, ml_collections.ConfigDict) else []
        near = difflib.get_close_matches(part, known, n=1)
        hint = f" (did you mean {'.'.join(path[:depth] + near)}?)" if near else ""
        raise ConfigError(f"degradation config has no key {key!r}{hint}")
      if depth < len(path) - 1:
        node = node[part]
    try:
      node[path[-1]] = tuple(value) if isinstance(value, list) else value
    except TypeError as e:
      raise ConfigError(f"degradation config {key}={value!r}: {e}") from None
  validate(cfg)
  return cfg


def preset(name: str) -> ml_collections.ConfigDict:
  """The named configuration: one of PRESETS."""
  if name not in PRESETS:
    raise ConfigError(f"unknown degradation preset {name!r} (choose from {', '.join(PRESETS)})")
  return override(default_config(), PRESETS[name])


def _field(cfg: ml_collections.ConfigDict, key: str):
  for part in key.split("."):
    cfg = cfg[part]
  return cfg


def validate(cfg: ml_collections.ConfigDict) -> None:
  """ConfigError naming the first key whose value cannot be used."""
  def check(key: str, ok: bool, need: str) -> None:
    if not ok:
      raise ConfigError(f"degradation config {key}={_field(cfg, key)!r}: {need}")

  def weights(key: str, n: int) -> None:
    w = _field(cfg, key)
    check(key, len(w) == n and min(w) >= 0 and sum(w) > 0, f"{n} non-negative weights")

  check("scale", isinstance(cfg.scale, int) and cfg.scale >= 1, "a positive integer")
  check("kernel_sizes", all(k % 2 == 1 and k >= 3 for k in cfg.kernel_sizes), "odd sizes >= 3")
  check("resize_modes", set(cfg.resize_modes) <= set(RESIZE_MODES), f"a subset of {RESIZE_MODES}")
  for key in ("sinc_prob", "sinc_prob2", "gaussian_noise_prob", "gaussian_noise_prob2",
              "gray_noise_prob", "gray_noise_prob2", "second_blur_prob", "final_sinc_prob",
              "video.prob", "video.crf_prob"):
    check(key, 0 <= _field(cfg, key) <= 1, "a probability in [0, 1]")
  for key in _STAGE_RANGES + tuple(k + "2" for k in _STAGE_RANGES) + _VIDEO_RANGES:
    lo_hi = _field(cfg, key)
    check(key, len(lo_hi) == 2 and 0 <= lo_hi[0] <= lo_hi[1], "a range (lo, hi), 0 <= lo <= hi")
  for suffix in ("", "2"):
    check(f"kernel_list{suffix}", set(cfg["kernel_list" + suffix]) <= set(kernels.KERNEL_TYPES),
          f"a subset of {kernels.KERNEL_TYPES}")
    weights(f"kernel_prob{suffix}", len(cfg["kernel_list" + suffix]))
    weights(f"resize_prob{suffix}", 3)
    check(f"jpeg_range{suffix}", cfg["jpeg_range" + suffix][1] <= 100, "qualities in 1..100")
    check(f"blur_sigma{suffix}", cfg["blur_sigma" + suffix][0] > 0, "positive sigmas")
  check("jitter", 0 <= cfg.jitter < 1, "in [0, 1)")
  check("video.codecs", set(cfg.video.codecs) <= set(compression.VIDEO_CODECS),
        f"a subset of {tuple(compression.VIDEO_CODECS)}")
  weights("video.codec_probs", len(cfg.video.codecs))
  check("video.preset", cfg.video.preset in compression.PRESETS, f"one of {compression.PRESETS}")
  for key in ("video.fps", "video.min_frames", "video.threads"):
    check(key, _field(cfg, key) >= 1, ">= 1")


@dataclasses.dataclass(frozen=True)
class StageParams:
  """One stage of a clip's degradation. Per-frame arrays are (T,)."""

  kernel: np.ndarray | None  # (K, K) blur; None: no blur
  resize_hw: tuple[int, int]  # size after the stage's resize
  resize_mode: str
  gaussian_noise: bool  # else Poisson
  gray_noise: bool
  noise_t: np.ndarray  # Gaussian sigma (0..255 scale) or Poisson scale per frame
  jpeg_t: np.ndarray  # JPEG quality per frame (int, 1..100)


@dataclasses.dataclass(frozen=True)
class ClipParams:
  """Everything drawn for one clip; `frames(a, b)` is the same for frames a..b-1."""

  stage1: StageParams
  stage2: StageParams
  sinc: np.ndarray | None  # (K, K) final sinc filter; None: none
  final_mode: str  # resize mode to the LQ size
  jpeg_last: bool  # stage 2 ends with resize + sinc then JPEG (else JPEG then resize + sinc)
  lq_hw: tuple[int, int]
  video: compression.VideoSpec | None  # None: no video compression

  def frames(self, start: int, stop: int) -> ClipParams:
    def cut(stage: StageParams) -> StageParams:
      return dataclasses.replace(stage, noise_t=stage.noise_t[start:stop],
                                 jpeg_t=stage.jpeg_t[start:stop])
    return dataclasses.replace(self, stage1=cut(self.stage1), stage2=cut(self.stage2))

  def summary(self) -> str:
    """One line: what was drawn."""
    def stage(s: StageParams) -> str:
      blur = f"blur {s.kernel.shape[0]}px" if s.kernel is not None else "no blur"
      kind = ("gaussian sigma" if s.gaussian_noise else "poisson scale") + (
          " gray" if s.gray_noise else "")
      return (f"{blur}, {s.resize_mode} to {s.resize_hw[1]}x{s.resize_hw[0]}, {kind} "
              f"{s.noise_t.mean():.2f}, jpeg {s.jpeg_t.mean():.0f}")
    sinc = f"sinc {self.sinc.shape[0]}px" if self.sinc is not None else "no sinc"
    order = "resize+sinc, jpeg" if self.jpeg_last else "jpeg, resize+sinc"
    video = "no video compression"
    if self.video is not None:
      rate = f"crf {self.video.crf}" if self.video.crf is not None else f"{self.video.bpp:.3f} bpp"
      video = f"{self.video.codec} {rate}"
    return (f"1: {stage(self.stage1)} | 2: {stage(self.stage2)} | final: {order}, {sinc}, "
            f"{self.final_mode} | {video}")


def _weights(w: Sequence[float]) -> np.ndarray:
  w = np.asarray(w, np.float64)
  return w / w.sum()


def _per_frame(rng: np.random.Generator, jitter: float, frames: int) -> np.ndarray:
  """(frames,) factors in [1 - jitter, 1 + jitter]; all ones (and no draw) for jitter 0."""
  if not jitter:
    return np.ones(frames)
  return 1 + jitter * rng.uniform(-1, 1, frames)


def _sample_stage(cfg: ml_collections.ConfigDict, rng: np.random.Generator, suffix: str,
                  blur: bool, base_hw: tuple[int, int], frames: int) -> StageParams:
  def get(key: str):
    return cfg[key + suffix]

  kernel = None
  if blur:
    kernel = kernels.random_blur(rng, cfg.kernel_sizes, get("sinc_prob"), get("kernel_list"),
                                 get("kernel_prob"), get("blur_sigma"), get("betag_range"),
                                 get("betap_range"))
  lo, hi = get("resize_range")
  direction = rng.choice(3, p=_weights(get("resize_prob")))  # up, down, keep
  factor = (rng.uniform(1, hi), rng.uniform(lo, 1), 1.0)[direction]
  resize_hw = (max(1, int(base_hw[0] * factor)), max(1, int(base_hw[1] * factor)))
  mode = cfg.resize_modes[rng.integers(len(cfg.resize_modes))]
  gaussian = rng.uniform() < get("gaussian_noise_prob")
  strength = rng.uniform(*get("noise_range" if gaussian else "poisson_scale_range"))
  gray = rng.uniform() < get("gray_noise_prob")
  quality = rng.uniform(*get("jpeg_range"))
  noise_t = strength * _per_frame(rng, cfg.jitter, frames)
  jpeg_t = np.clip(np.rint(quality * _per_frame(rng, cfg.jitter, frames)), 1, 100).astype(int)
  return StageParams(kernel, resize_hw, mode, bool(gaussian), bool(gray), noise_t, jpeg_t)


def _sample_video(cfg: ml_collections.ConfigDict, rng: np.random.Generator,
                  frames: int) -> compression.VideoSpec | None:
  v = cfg.video
  if frames < v.min_frames or rng.uniform() >= v.prob:
    return None
  codec = v.codecs[rng.choice(len(v.codecs), p=_weights(v.codec_probs))]
  common = dict(fps=fractions.Fraction(v.fps), preset=v.preset, threads=v.threads)
  if codec in compression.CRF_CODECS and rng.uniform() < v.crf_prob:
    return compression.VideoSpec(codec, crf=int(rng.integers(v.crf_range[0], v.crf_range[1] + 1)),
                                 **common)
  return compression.VideoSpec(codec, bpp=float(rng.uniform(*v.bpp_range)), **common)


def sample_params(cfg: ml_collections.ConfigDict, rng: np.random.Generator,
                  hq_hw: tuple[int, int], frames: int = 1) -> ClipParams:
  """One draw of every degradation parameter for a clip of `frames` frames of size hq_hw (a
  multiple of cfg.scale, else InputError)."""
  validate(cfg)
  h, w = hq_hw
  if h % cfg.scale or w % cfg.scale:
    raise InputError(f"HQ size {w}x{h} is not a multiple of the scale {cfg.scale} (crop first)")
  lq_hw = (h // cfg.scale, w // cfg.scale)
  stage1 = _sample_stage(cfg, rng, "", True, (h, w), frames)
  stage2 = _sample_stage(cfg, rng, "2", bool(rng.uniform() < cfg.second_blur_prob), lq_hw,
                         frames)
  sinc = None
  if rng.uniform() < cfg.final_sinc_prob:
    sinc = kernels.random_sinc(rng, int(rng.choice(cfg.kernel_sizes)), final=True)
  final_mode = cfg.resize_modes[rng.integers(len(cfg.resize_modes))]
  jpeg_last = bool(rng.uniform() < 0.5)
  return ClipParams(stage1, stage2, sinc, final_mode, jpeg_last, lq_hw,
                    _sample_video(cfg, rng, frames))


def _filter(x_tchw: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """Every frame and channel filtered by one point-symmetric (K, K) kernel with reflect borders
  (basicsr filter2D): real FFTs of the padded frames, one frame at a time to bound memory."""
  k = kernel.shape[0]
  padded = np.pad(x_tchw, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)), mode="reflect")
  h, w = padded.shape[2:]
  # Circular convolution at any size >= the padded frame is exact away from the first K - 1
  # rows and columns, which are the ones "valid" filtering drops anyway.
  fft_hw = (sp_fft.next_fast_len(h, real=True), sp_fft.next_fast_len(w, real=True))
  kernel_f = sp_fft.rfft2(kernel.astype(np.float32), fft_hw)
  out = np.empty_like(x_tchw)
  for t, frame in enumerate(padded):
    y = sp_fft.irfft2(sp_fft.rfft2(frame, fft_hw) * kernel_f, fft_hw, overwrite_x=True)
    out[t] = y[:, k - 1:h, k - 1:w]
  return out


def _add_noise(x_tchw: np.ndarray, stage: StageParams,
               rngs: Sequence[np.random.Generator]) -> np.ndarray:
  make = noise.gaussian if stage.gaussian_noise else noise.poisson
  x_tchw += make(x_tchw, stage.noise_t, stage.gray_noise, rngs)
  return np.clip(x_tchw, 0, 1, out=x_tchw)


def _resize_and_sinc(x_tchw: np.ndarray, params: ClipParams) -> np.ndarray:
  x_tchw = resize(x_tchw, params.lq_hw, params.final_mode)
  return x_tchw if params.sinc is None else _filter(x_tchw, params.sinc)


def _steps(params: ClipParams, rngs: Sequence[np.random.Generator]):
  """The per-frame pipeline as named steps on planar float32 clips."""
  s1, s2 = params.stage1, params.stage2

  def second_stage(x: np.ndarray) -> np.ndarray:
    if s2.kernel is not None:
      x = _filter(x, s2.kernel)
    return _add_noise(resize(x, s2.resize_hw, s2.resize_mode), s2, rngs)

  def final(x: np.ndarray) -> np.ndarray:
    if params.jpeg_last:
      return compression.jpeg(_resize_and_sinc(x, params), s2.jpeg_t)
    return _resize_and_sinc(compression.jpeg(x, s2.jpeg_t), params)

  return [("blur", lambda x: _filter(x, s1.kernel)),
          ("resize", lambda x: resize(x, s1.resize_hw, s1.resize_mode)),
          ("noise", lambda x: _add_noise(x, s1, rngs)),
          ("jpeg", lambda x: compression.jpeg(x, s1.jpeg_t)),
          ("second stage", second_stage),
          ("final", final)]


def degrade_frames(hq_thwc: np.ndarray, params: ClipParams, rngs: Sequence[np.random.Generator],
                   seconds: dict[str, float] | None = None) -> np.ndarray:
  """Both Real-ESRGAN stages with `params` on (T, H, W, 3) uint8 (one generator per frame for
  the noise) -> (T, h, w, 3) uint8 LQ frames, before video compression. `seconds`, if given,
  accumulates the time of each step by name."""
  t, h, w, _ = hq_thwc.shape
  out = np.empty((t, *params.lq_hw, 3), np.uint8)
  step = max(1, _CHUNK_PIXELS // (h * w))
  for first in range(0, t, step):
    last = min(first + step, t)
    x = hq_thwc[first:last].transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    for name, run in _steps(params.frames(first, last), rngs[first:last]):
      start = time.perf_counter()
      x = run(x)
      if seconds is not None:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
    out[first:last] = np.clip(np.rint(x * 255), 0, 255).transpose(0, 2, 3, 1)
  return out


def degrade_clip(hq_thwc: np.ndarray, cfg: ml_collections.ConfigDict,
                 seed: int | np.random.Generator) -> np.ndarray:
  """(T, H, W, 3) uint8 HQ clip (H, W multiples of cfg.scale) -> (T, H/scale, W/scale, 3) uint8
  LQ clip. The same seed gives the same clip, bit for bit."""
  hq = np.asarray(hq_thwc)
  if hq.dtype != np.uint8 or hq.ndim != 4 or hq.shape[-1] != 3 or not hq.shape[0]:
    raise InputError(f"expected a (T, H, W, 3) uint8 clip, got {hq.dtype} {hq.shape}")
  rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
  params = sample_params(cfg, rng, hq.shape[1:3], frames=hq.shape[0])
  lq = degrade_frames(hq, params, rng.spawn(hq.shape[0]))
  return lq if params.video is None else compression.video(lq, params.video)
