"""The per-pixel stages of the training degradation (data/degradations.py) as one jitted
accelerator program: blur, resize, Gaussian / Poisson noise, JPEG and the final resize + sinc.

Parameters are drawn on the host (`degradations.sample_params`, unchanged) and turned into a
`plan` of fixed-shape arrays (`make_plan`): blur and sinc kernels zero-padded to the largest
configured size, each resize as a pair of dense interpolation matrices (rows and columns) built
from `resize.taps`, per-frame JPEG qualities as quantisation tables, noise kind and strength,
the sizes each stage produces and a noise key. Images of a stage whose size depends on the draw
live on a fixed canvas (the largest size the config can draw, rounded up to 16) with the drawn
size in its top-left corner; every operation reads only that region (reflect and edge padding
are gathers about the drawn size). So the shapes of a plan depend only on (config, clip shape):
one compilation per clip shape serves every draw. Noise is drawn on the device with jax.random.
The video codec round trip is not here: it runs on the host on this program's uint8 output.
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seedvr2_jax.data import compression, degradations, noise
from seedvr2_jax.data.resize import taps

_HI = jax.lax.Precision.HIGHEST  # float32 arithmetic on GPUs and TPUs too, as the numpy stages
_MACROBLOCK = 16  # JPEG works on whole 16x16 macroblocks (4:2:0)
_POISSON_EXACT_BELOW = 25.0  # as data/noise.py: exact draws below, a rounded normal above
_POISSON_MAX_COUNT = 64  # inverse-CDF draws stop here: P(count > 64 | lam < 25) < 1e-11


def _ceil(n: int, m: int = _MACROBLOCK) -> int:
  return -(-n // m) * m


@dataclasses.dataclass(frozen=True)
class Canvas:
  """Fixed (height, width) of each stage's image for one (config, HQ size)."""

  stage1: tuple[int, int]  # after stage 1's resize
  stage2: tuple[int, int]  # after stage 2's resize
  lq: tuple[int, int]  # the LQ size rounded up to macroblocks
  kernel: int  # largest blur / sinc kernel


def canvas(cfg: ml_collections.ConfigDict, hq_hw: tuple[int, int]) -> Canvas:
  """The canvases of `cfg` for HQ frames of hq_hw: the largest size each resize can draw."""
  lq_hw = (hq_hw[0] // cfg.scale, hq_hw[1] // cfg.scale)

  def largest(base_hw, hi):
    return tuple(_ceil(max(n, int(n * max(hi, 1.0)))) for n in base_hw)

  return Canvas(largest(hq_hw, cfg.resize_range[1]), largest(lq_hw, cfg.resize_range2[1]),
                tuple(_ceil(n) for n in lq_hw), max(cfg.kernel_sizes))


def _kernel(kernel: np.ndarray | None, size: int) -> np.ndarray:
  """(K, K) -> (size, size) float32 convolution kernel, centred; None -> the identity."""
  if kernel is None:
    kernel = np.ones((1, 1))
  pad = (size - kernel.shape[0]) // 2
  # Flipped: the device computes correlations, the numpy stages convolutions.
  return np.pad(kernel[::-1, ::-1], pad).astype(np.float32)


def _matrix(in_size: int, out_size: int, mode: str, in_canvas: int, out_canvas: int):
  """(out_canvas, in_canvas) float32: rows < out_size resize the first in_size inputs."""
  m = np.zeros((out_canvas, in_canvas), np.float32)
  if in_size == out_size:  # the numpy stage leaves the axis alone
    m[np.arange(in_size), np.arange(in_size)] = 1
    return m
  index, weight = taps(in_size, out_size, mode)
  np.add.at(m, (np.arange(out_size)[:, None], index), weight)
  return m


def _resize_pair(in_hw, out_hw, mode, in_canvas, out_canvas) -> dict:
  return {"rows": _matrix(in_hw[0], out_hw[0], mode, in_canvas[0], out_canvas[0]),
          "cols": _matrix(in_hw[1], out_hw[1], mode, in_canvas[1], out_canvas[1])}


def _noise_plan(stage: degradations.StageParams) -> dict:
  return {"gaussian": np.bool_(stage.gaussian_noise), "gray": np.bool_(stage.gray_noise),
          "strength_t": np.asarray(stage.noise_t, np.float32)}


def _jpeg_plan(quality_t: np.ndarray) -> dict:
  luma, chroma = compression.quant_tables(quality_t)
  return {"luma_t88": luma.astype(np.float32), "chroma_t88": chroma.astype(np.float32)}


def make_plan(params: degradations.ClipParams, cfg: ml_collections.ConfigDict,
              hq_hw: tuple[int, int], key: np.ndarray) -> dict:
  """A clip's drawn parameters as a pytree of numpy arrays whose shapes depend only on (cfg,
  hq_hw, frames); `key`: (2,) uint32 raw threefry key of its noise."""
  c = canvas(cfg, hq_hw)
  s1, s2 = params.stage1, params.stage2
  return {
      "blur1": _kernel(s1.kernel, c.kernel),
      "resize1": _resize_pair(hq_hw, s1.resize_hw, s1.resize_mode, hq_hw, c.stage1),
      "size1": np.asarray(s1.resize_hw, np.int32), "noise1": _noise_plan(s1),
      "jpeg1": _jpeg_plan(s1.jpeg_t),
      "blur2": _kernel(s2.kernel, c.kernel),
      "resize2": _resize_pair(s1.resize_hw, s2.resize_hw, s2.resize_mode, c.stage1, c.stage2),
      "size2": np.asarray(s2.resize_hw, np.int32), "noise2": _noise_plan(s2),
      "jpeg2": _jpeg_plan(s2.jpeg_t),
      "final": _resize_pair(s2.resize_hw, params.lq_hw, params.final_mode, c.stage2, c.lq),
      "sinc": _kernel(params.sinc, c.kernel),
      "jpeg_last": np.bool_(params.jpeg_last),
      "key": np.asarray(key, np.uint32),
  }


# Device stages on planar (T, 3, H, W) float32 canvases; `hw` is the drawn size (int32 (2,)).


def _reflect(n: int, pad: int, size) -> jnp.ndarray:
  """(n + 2 pad,) indices of np.pad(..., mode="reflect") about the first `size` entries."""
  p = jnp.arange(n + 2 * pad) - pad
  period = jnp.maximum(2 * (size - 1), 1)
  m = jnp.mod(p, period)
  return jnp.where(m < size, m, period - m)


def blur(x_tchw: jnp.ndarray, kernel: jnp.ndarray, hw) -> jnp.ndarray:
  """Each frame and channel filtered by one (K, K) kernel (a `make_plan` kernel: flipped), the
  region hw reflect-padded as basicsr filter2D."""
  t, c, h, w = x_tchw.shape
  pad = kernel.shape[0] // 2
  x = jnp.take(x_tchw, _reflect(h, pad, hw[0]), axis=2)
  x = jnp.take(x, _reflect(w, pad, hw[1]), axis=3)
  y = jax.lax.conv_general_dilated(x.reshape(t * c, 1, *x.shape[2:]), kernel[None, None],
                                   (1, 1), "VALID", precision=_HI)
  return y.reshape(t, c, h, w)


def resize(x_tchw: jnp.ndarray, pair: dict) -> jnp.ndarray:
  """Rows, then columns, through the interpolation matrices of `pair`."""
  x = jnp.einsum("oh,tchw->tcow", pair["rows"], x_tchw, precision=_HI)
  return jnp.einsum("pw,tchw->tchp", pair["cols"], x, precision=_HI)


def _valid(shape_hw, hw) -> jnp.ndarray:
  """(H, W) bool: inside the drawn region."""
  return ((jnp.arange(shape_hw[0]) < hw[0])[:, None]) & ((jnp.arange(shape_hw[1]) < hw[1])[None])


def gaussian_noise(key, x_tchw: jnp.ndarray, plan: dict) -> jnp.ndarray:
  """As noise.gaussian: N(0, sigma^2), sigma per frame on the 0..255 scale; gray: one field for
  R, G and B. (T, 3, H, W) float32 to add."""
  z = jax.random.normal(key, x_tchw.shape, jnp.float32)
  z = jnp.where(plan["gray"], z[:, :1], z)
  return z * (plan["strength_t"] / 255)[:, None, None, None]


def _levels(x8_tchw: jnp.ndarray, valid_hw: jnp.ndarray) -> jnp.ndarray:
  """(T,) as noise._levels over the valid region: 2^ceil(log2(distinct 8-bit values))."""
  def distinct(frame):
    weights = jnp.broadcast_to(valid_hw, frame.shape).ravel().astype(jnp.int32)
    return jnp.count_nonzero(jnp.bincount(frame.ravel(), weights, length=256))
  n = jax.vmap(distinct)(x8_tchw)
  return 2.0 ** jnp.sum(n[:, None] > 2 ** jnp.arange(9), axis=1).astype(jnp.float32)


def _small_poisson(key, lam: jnp.ndarray) -> jnp.ndarray:
  """Poisson(lam) counts for lam < 25 by inverting the CDF of one uniform draw per element: a
  fixed number of elementwise steps (jax.random.poisson loops until its slowest element)."""
  u = jax.random.uniform(key, lam.shape)

  def step(k, carry):
    count, p, cdf = carry
    p = p * lam / k
    return count + (u > cdf), p, cdf + p

  p0 = jnp.exp(-lam)
  count, _, _ = jax.lax.fori_loop(1, _POISSON_MAX_COUNT + 1, step,
                                  (jnp.zeros_like(lam), p0, p0))
  return count


def poisson_noise(key, x_tchw: jnp.ndarray, plan: dict, hw) -> jnp.ndarray:
  """As noise.poisson: shot noise of the 8-bit-rounded image (gray: of its luma, one field for
  R, G and B) times the per-frame scale. (T, 3, H, W) float32 to add."""
  luma = jnp.einsum("tchw,c->thw", x_tchw, jnp.asarray(noise.GRAY), precision=_HI)[:, None]
  img = jnp.where(plan["gray"], luma, x_tchw)
  img8 = jnp.clip(jnp.rint(img * 255), 0, 255)
  img = img8 / 255
  vals = _levels(img8.astype(jnp.int32), _valid(x_tchw.shape[2:], hw))[:, None, None, None]
  lam = img * vals
  small = lam < _POISSON_EXACT_BELOW
  exact_key, normal_key = jax.random.split(key)
  exact = _small_poisson(exact_key, jnp.where(small, lam, 0.0))
  approx = jnp.rint(lam + jnp.sqrt(lam) * jax.random.normal(normal_key, lam.shape))
  counts = jnp.maximum(jnp.where(small, exact, approx), 0)
  field = (counts / vals - img) * plan["strength_t"][:, None, None, None]
  return jnp.where(plan["gray"], field[:, :1], field)


def draw_noise(key, x_tchw: jnp.ndarray, plan: dict, hw) -> jnp.ndarray:
  """The stage's noise field: Gaussian or Poisson as the plan says."""
  return jax.lax.cond(plan["gaussian"], lambda: gaussian_noise(key, x_tchw, plan),
                      lambda: poisson_noise(key, x_tchw, plan, hw))


def _to_8bit(x):
  return jnp.clip(jnp.rint(x), 0.0, 255.0)


def _blocks_roundtrip(plane_nhw: jnp.ndarray, table_n88: jnp.ndarray) -> jnp.ndarray:
  """As compression._blocks_roundtrip: DCT, quantise, dequantise, inverse DCT of 8x8 blocks."""
  n, h, w = plane_nhw.shape
  dct = jnp.asarray(compression.DCT)
  x = (plane_nhw - 128.0).reshape(n, h // 8, 8, w // 8, 8)
  # One axis at a time, rows first, as the numpy codec: the same sums, so that coefficients
  # at exact ties of the rounding (k + 1/2) mostly round alike.
  x = jnp.einsum("nyixj,vj->nyixv", x, dct, precision=_HI)
  coef = jnp.einsum("ui,nyixv->nyuxv", dct, x, precision=_HI)
  table = table_n88[:, None, :, None, :]
  coef = jnp.rint(coef / table) * table
  x = jnp.einsum("ui,nyuxv->nyixv", dct, coef, precision=_HI)
  x = jnp.einsum("nyixv,vj->nyixj", x, dct, precision=_HI) + 128.0
  return _to_8bit(x.reshape(n, h, w))


def _upsample2(x: jnp.ndarray, axis: int, size) -> jnp.ndarray:
  """As compression._upsample2 with the first `size` entries of `axis` the input."""
  i = jnp.arange(x.shape[axis])
  prev = jnp.take(x, jnp.maximum(i - 1, 0), axis=axis)
  nxt = jnp.take(x, jnp.minimum(i + 1, size - 1), axis=axis)
  even = x - 0.25 * (x - prev)
  odd = x + 0.25 * (nxt - x)
  out = jnp.stack([even, odd], axis=axis + 1)
  shape = list(x.shape)
  shape[axis] *= 2
  return out.reshape(shape)


def jpeg(x_tchw: jnp.ndarray, plan: dict, hw) -> jnp.ndarray:
  """As compression.jpeg on the region hw of a canvas whose sides are multiples of 16 (what
  lies outside the region is edge-replicated, as libjpeg pads to whole macroblocks)."""
  t, _, h, w = x_tchw.shape
  rgb = _to_8bit(jnp.clip(x_tchw, 0.0, 1.0) * 255)
  rgb = jnp.take(rgb, jnp.minimum(jnp.arange(h), hw[0] - 1), axis=2)
  rgb = jnp.take(rgb, jnp.minimum(jnp.arange(w), hw[1] - 1), axis=3)
  ycc = jnp.einsum("dc,tchw->tdhw", jnp.asarray(compression.RGB_TO_YCC), rgb, precision=_HI)
  c = ycc[:, 1:]
  chroma = 0.25 * (c[..., 0::2, 0::2] + c[..., 1::2, 0::2] + c[..., 0::2, 1::2]
                   + c[..., 1::2, 1::2]) + 128.0
  y = _blocks_roundtrip(ycc[:, 0], plan["luma_t88"])
  chroma = _blocks_roundtrip(chroma.reshape(2 * t, h // 2, w // 2),
                             jnp.repeat(plan["chroma_t88"], 2, axis=0)) - 128.0
  macroblocks = (hw + _MACROBLOCK - 1) // _MACROBLOCK
  chroma = _upsample2(_upsample2(chroma, 1, 8 * macroblocks[0]), 2, 8 * macroblocks[1])
  ycc_out = jnp.concatenate([y[:, None], chroma.reshape(t, 2, h, w)], axis=1)
  rgb_out = jnp.einsum("dc,tchw->tdhw", jnp.asarray(compression.YCC_TO_RGB), ycc_out,
                       precision=_HI)
  return _to_8bit(rgb_out) / 255


def _add(x_tchw, field):
  return jnp.clip(x_tchw + field, 0, 1)


def degrade_planar(x_tchw: jnp.ndarray, plan: dict, lq_hw: tuple[int, int],
                   noise_fn=None) -> jnp.ndarray:
  """Both Real-ESRGAN stages on a planar HQ clip in [0, 1] -> (T, 3, lq canvas) float32 (the LQ
  of size lq_hw in the top-left corner). `noise_fn(stage, x, hw)` -> the field added at stage 1
  or 2 (default: drawn on the device from the plan's key)."""
  if noise_fn is None:
    keys = jax.random.split(jax.random.wrap_key_data(plan["key"], impl="threefry2x32"))
    noise_fn = lambda stage, x, hw: draw_noise(keys[stage - 1], x, plan[f"noise{stage}"], hw)
  hq_hw = jnp.asarray(x_tchw.shape[2:], jnp.int32)
  lq_size = jnp.asarray(lq_hw, jnp.int32)
  x = resize(blur(x_tchw, plan["blur1"], hq_hw), plan["resize1"])
  x = _add(x, noise_fn(1, x, plan["size1"]))
  x = jpeg(x, plan["jpeg1"], plan["size1"])
  x = resize(blur(x, plan["blur2"], plan["size1"]), plan["resize2"])
  x = _add(x, noise_fn(2, x, plan["size2"]))

  def resize_and_sinc(x):
    return blur(resize(x, plan["final"]), plan["sinc"], lq_size)

  return jax.lax.cond(plan["jpeg_last"],
                      lambda x: jpeg(resize_and_sinc(x), plan["jpeg2"], lq_size),
                      lambda x: resize_and_sinc(jpeg(x, plan["jpeg2"], plan["size2"])), x)


@functools.partial(jax.jit, static_argnames="lq_hw")
def degrade_clips(hq_bthwc: jnp.ndarray, plans: dict, lq_hw: tuple[int, int]) -> jnp.ndarray:
  """(B, T, H, W, 3) uint8 HQ clips and their stacked plans -> (B, T, h, w, 3) uint8 LQ clips
  before video compression; clips one after another (each takes only its branches)."""
  def one(args):
    hq, plan = args
    x = hq.transpose(0, 3, 1, 2).astype(jnp.float32) / 255
    lq = degrade_planar(x, plan, lq_hw)[:, :, :lq_hw[0], :lq_hw[1]]
    return jnp.clip(jnp.rint(lq * 255), 0, 255).astype(jnp.uint8).transpose(0, 2, 3, 1)
  return jax.lax.map(one, (hq_bthwc, plans))


def video_arrays(spec: compression.VideoSpec | None) -> dict:
  """A clip's drawn video compression as arrays (Grain stacks them into batches); codec -1:
  none. `video_spec` reads them back."""
  if spec is None:
    return {"codec": np.int32(-1), "crf": np.int32(-1), "bpp": np.float64(0)}
  return {"codec": np.int32(list(compression.VIDEO_CODECS).index(spec.codec)),
          "crf": np.int32(-1 if spec.crf is None else spec.crf),
          "bpp": np.float64(0 if spec.bpp is None else spec.bpp)}


def video_spec(arrays: dict, cfg: ml_collections.ConfigDict) -> compression.VideoSpec | None:
  """The VideoSpec of one clip's `video_arrays` (fps, preset and threads from cfg.video)."""
  if arrays["codec"] < 0:
    return None
  rate = {"crf": int(arrays["crf"])} if arrays["crf"] >= 0 else {"bpp": float(arrays["bpp"])}
  return compression.VideoSpec(list(compression.VIDEO_CODECS)[int(arrays["codec"])],
                               fps=fractions.Fraction(cfg.video.fps), preset=cfg.video.preset,
                               threads=cfg.video.threads, **rate)


def draw(cfg: ml_collections.ConfigDict, rng: np.random.Generator, hq_thwc: np.ndarray) -> dict:
  """Host side of one clip: {"plan", "video"} drawn from rng (parameters, then the noise key)."""
  params = degradations.sample_params(cfg, rng, hq_thwc.shape[1:3], frames=hq_thwc.shape[0])
  key = rng.integers(0, 2 ** 32, 2, dtype=np.uint32)
  return {"plan": make_plan(params, cfg, hq_thwc.shape[1:3], key),
          "video": video_arrays(params.video)}


class Degrader:
  """Host batch {"hq", "plan", "video"} (stacked `draw`s) -> {"hq", "lq"}: the per-pixel stages
  on this process's devices (its clips split over as many as divide them), the uint8 LQ clips
  back to the host, each through its video codec round trip there."""

  def __init__(self, cfg: ml_collections.ConfigDict, devices=None):
    self.cfg = cfg
    self.devices = list(devices or jax.local_devices())
    self._programs = {}  # (clips, lq_hw) -> (input sharding, jitted program)

  def _program(self, clips: int, lq_hw: tuple[int, int]):
    if (clips, lq_hw) not in self._programs:
      mesh = jax.sharding.Mesh(np.array(self.devices[:math.gcd(clips, len(self.devices))]),
                               ("clips",))
      spec = jax.sharding.PartitionSpec("clips")
      run = jax.shard_map(functools.partial(degrade_clips, lq_hw=lq_hw), mesh=mesh,
                          in_specs=spec, out_specs=spec)
      self._programs[clips, lq_hw] = jax.sharding.NamedSharding(mesh, spec), jax.jit(run)
    return self._programs[clips, lq_hw]

  def __call__(self, batch: dict) -> dict:
    hq, plans, video = batch.pop("hq"), batch.pop("plan"), batch.pop("video")
    b, _, h, w, _ = hq.shape
    split, run = self._program(b, (h // self.cfg.scale, w // self.cfg.scale))
    lq = np.array(run(*jax.device_put((hq, plans), split)))
    for i in range(b):
      spec = video_spec({k: v[i] for k, v in video.items()}, self.cfg)
      if spec is not None:
        lq[i] = compression.video(lq[i], spec)
    return {**batch, "hq": hq, "lq": lq}
