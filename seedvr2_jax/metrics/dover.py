"""DOVER technical score (Wu et al., "Exploring Video Quality Assessment on User Generated Contents
from Aesthetic and Technical Perspectives", ICCV 2023), no-reference, one score per video, higher
is better: a port of the technical branch of the official DOVER code (VQAssessment/DOVER,
`dover.yml`, `evaluate_a_set_of_videos.py`), the number SeedVR2 reports.

Sampling (the official `val-l1080p` technical options): 3 temporal fragments of 32 frames at
interval 2 (starts T // 3 * i plus a random offset below T // 3 - 64 when that is positive;
indices mod T); frames whose short side is below 224 upsampled bilinearly (torch, no
antialiasing) by 224 / short side and truncated to uint8 as the official code does; per 32-frame
segment a 7x7 grid of 32x32 fragments, each at a random offset inside its grid cell, spliced
into a 224x224 video (the grid laid on the frame size before upsampling, as the official code
does); normalised with the ImageNet mean/std on the 0-255 scale. The official
code draws the offsets unseeded (numpy / torch); here `sample_plan` draws them from
`np.random.default_rng(seed)` (seed 0 by default) in the same ranges, so a video always gets the
same score.

Model: the Video Swin Transformer (tiny: patches 2x4x4, width 96, depths 2-2-6-2, heads
3-6-12-24, windows 8x7x7, shifted every other block) with DOVER's fragment-gated relative
position biases in the first three stages, then the technical head (1x1x1 convs 768 -> 64, GELU,
-> 1) on every position. Score = 100 sigmoid((mean of the head's map over the 3 clips - 0.1107)
/ 0.07355), the "technical score" the official evaluation script prints (its `fuse_results`).

Weights: the official `DOVER.pth` (keys `technical_backbone.*`, `technical_head.*`; the
aesthetic branch is not used), from the DOVER repository's release files, in `--iqa-weights`.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from seedvr2_jax.metrics import torch_layers as tl
from seedvr2_jax.metrics import torch_weights

FILES = ("DOVER.pth", "dover.pth", "DOVER.safetensors")
SOURCE = "the official DOVER.pth, VQAssessment/DOVER release files"
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
# Official technical-score rescaling (evaluate_a_set_of_videos.py, fuse_results).
TECHNICAL_MEAN, TECHNICAL_SCALE = 0.1107, 0.07355
FRAGMENTS, FRAGMENT_SIZE = 7, 32
CLIPS, CLIP_LEN, FRAME_INTERVAL = 3, 32, 2


@dataclasses.dataclass(frozen=True)
class Config:
  embed: int = 96
  depths: tuple[int, ...] = (2, 2, 6, 2)
  heads: tuple[int, ...] = (3, 6, 12, 24)
  window: tuple[int, int, int] = (8, 7, 7)
  frag_biases: tuple[bool, ...] = (True, True, True, False)
  hidden: int = 64  # head


def expected_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
  """DOVER.pth names (technical branch) -> shapes."""
  b = "technical_backbone"
  table = math.prod(2 * w - 1 for w in cfg.window)
  s = {f"{b}.patch_embed.proj.weight": (cfg.embed, 3, 2, 4, 4),
       f"{b}.patch_embed.proj.bias": (cfg.embed,),
       f"{b}.patch_embed.norm.weight": (cfg.embed,), f"{b}.patch_embed.norm.bias": (cfg.embed,)}
  for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.heads)):
    dim = cfg.embed * 2 ** i
    for j in range(depth):
      p = f"{b}.layers.{i}.blocks.{j}"
      s.update({f"{p}.norm1.weight": (dim,), f"{p}.norm1.bias": (dim,),
                f"{p}.norm2.weight": (dim,), f"{p}.norm2.bias": (dim,),
                f"{p}.attn.relative_position_bias_table": (table, heads),
                f"{p}.attn.qkv.weight": (3 * dim, dim), f"{p}.attn.qkv.bias": (3 * dim,),
                f"{p}.attn.proj.weight": (dim, dim), f"{p}.attn.proj.bias": (dim,),
                f"{p}.mlp.fc1.weight": (4 * dim, dim), f"{p}.mlp.fc1.bias": (4 * dim,),
                f"{p}.mlp.fc2.weight": (dim, 4 * dim), f"{p}.mlp.fc2.bias": (dim,)})
      if cfg.frag_biases[i]:
        s[f"{p}.attn.fragment_position_bias_table"] = (table, heads)
    if i < len(cfg.depths) - 1:
      s.update({f"{b}.layers.{i}.downsample.reduction.weight": (2 * dim, 4 * dim),
                f"{b}.layers.{i}.downsample.norm.weight": (4 * dim,),
                f"{b}.layers.{i}.downsample.norm.bias": (4 * dim,)})
  top = cfg.embed * 2 ** (len(cfg.depths) - 1)
  s.update({f"{b}.norm.weight": (top,), f"{b}.norm.bias": (top,),
            "technical_head.fc_hid.weight": (cfg.hidden, top, 1, 1, 1),
            "technical_head.fc_hid.bias": (cfg.hidden,),
            "technical_head.fc_last.weight": (1, cfg.hidden, 1, 1, 1),
            "technical_head.fc_last.bias": (1,)})
  return s


def load_weights(weights_dir: str | None, cfg: Config = Config()) -> dict:
  path = torch_weights.find(weights_dir, FILES, "dover", SOURCE)
  return torch_weights.read(path, expected_shapes(cfg))


# --- sampling -------------------------------------------------------------------------------

def frame_indices(frames: int, offsets: np.ndarray) -> np.ndarray:
  """(CLIPS * CLIP_LEN,) frame indices of the temporal fragments, `offsets` (CLIPS,)."""
  grids = frames // CLIPS * np.arange(CLIPS)
  idx = np.arange(CLIP_LEN)[None] * FRAME_INTERVAL + offsets[:, None] + grids[:, None]
  return np.mod(idx.reshape(-1), frames)


def _bilinear_axis(x: np.ndarray, axis: int, scale_factor: float) -> np.ndarray:
  """torch bilinear (align_corners=False, a given scale factor) along `axis`, in float32 with
  torch's CPU arithmetic: source = max((i + 0.5) / scale_factor - 0.5, 0), weights 1 - l, l,
  the second term added by a fused multiply-add (emulated in float64). The official code
  truncates the result to uint8, so last-bit differences would change whole levels."""
  n = x.shape[axis]
  out = int(math.floor(n * scale_factor))
  inv = np.float32(1.0 / scale_factor)
  src = np.maximum(inv * (np.arange(out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5),
                   np.float32(0))
  i0 = src.astype(np.int64)
  i1 = np.minimum(i0 + 1, n - 1)
  lam1 = src - i0.astype(np.float32)
  lam0 = np.float32(1) - lam1
  shape = [1] * x.ndim
  shape[axis] = out
  first = np.take(x, i0, axis) * lam0.reshape(shape)
  fused = (np.take(x, i1, axis).astype(np.float64) * lam1.reshape(shape).astype(np.float64)
           + first.astype(np.float64))
  return fused.astype(np.float32)


def upsample(video_thwc: np.ndarray) -> np.ndarray:
  """uint8 frames with a short side below 224 -> upsampled by 224 / short side (truncated to
  uint8, as the official code's `.type_as` of the uint8 video); others unchanged."""
  h, w = video_thwc.shape[1:3]
  ratio = min(h / (FRAGMENTS * FRAGMENT_SIZE), w / (FRAGMENTS * FRAGMENT_SIZE))
  if ratio >= 1:
    return video_thwc
  x = video_thwc.astype(np.float32) / 255.0
  x = _bilinear_axis(_bilinear_axis(x, 2, 1 / ratio), 1, 1 / ratio)  # width inner, as torch
  return (x * 255.0).astype(np.uint8)


def fragment_clips(clip_thwc: np.ndarray, offsets_h: np.ndarray,
                   offsets_w: np.ndarray) -> np.ndarray:
  """uint8 (CLIPS * CLIP_LEN, H, W, 3) sampled frames -> (CLIPS, CLIP_LEN, 224, 224, 3)
  normalised fragments. Per 32-frame segment s, grid cell (i, j) takes the 32x32 patch at
  (min(H // 7 * i, H - 32) + offsets_h[i, j, s], likewise w) of the upsampled frames, with H, W
  the sizes *before* upsampling, as the official code computes them (a small video's fragments
  therefore come from the top left of its upsampled frames)."""
  t, h, w, c = clip_thwc.shape
  video = upsample(clip_thwc)
  f, side = FRAGMENT_SIZE, FRAGMENTS * FRAGMENT_SIZE
  out = np.zeros((t, side, side, c), np.float32)
  for i in range(FRAGMENTS):
    hs = min(h // FRAGMENTS * i, h - f)
    for j in range(FRAGMENTS):
      ws = min(w // FRAGMENTS * j, w - f)
      for s in range(t // CLIP_LEN):
        top, left = hs + offsets_h[i, j, s], ws + offsets_w[i, j, s]
        out[s * CLIP_LEN:(s + 1) * CLIP_LEN, i * f:(i + 1) * f, j * f:(j + 1) * f] = \
            video[s * CLIP_LEN:(s + 1) * CLIP_LEN, top:top + f, left:left + f]
  out = (out - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
  return out.reshape(t // CLIP_LEN, CLIP_LEN, side, side, c)


def sample_plan(frames: int, height: int, width: int, seed: int = 0):
  """(frame indices (96,), offsets_h, offsets_w (7, 7, 3)) of a T x H x W video: the official
  ranges, drawn from `np.random.default_rng(seed)`."""
  rng = np.random.default_rng(seed)
  span = frames // CLIPS - CLIP_LEN * FRAME_INTERVAL
  t_offsets = rng.integers(0, span, CLIPS) if span > 0 else np.zeros(CLIPS, np.int64)
  offsets = []
  for size in (height, width):
    room = size // FRAGMENTS - FRAGMENT_SIZE
    shape = (FRAGMENTS, FRAGMENTS, CLIPS)
    offsets.append(rng.integers(0, room, shape) if room > 0 else np.zeros(shape, np.int64))
  return frame_indices(frames, t_offsets), offsets[0], offsets[1]


# --- Video Swin Transformer with fragment-gated biases ----------------------------------------

def _window_size(size, window, shift):
  """The official get_window_size: a window (and no shift) no larger than the feature map."""
  use_w, use_s = list(window), list(shift)
  for i, n in enumerate(size):
    if n <= window[i]:
      use_w[i], use_s[i] = n, 0
  return tuple(use_w), tuple(use_s)


def _partition(x: np.ndarray, w) -> np.ndarray:
  """(B, D, H, W, C) -> (B * nW, wd * wh * ww, C) windows (row-major window order)."""
  b, d, h, ww_, c = x.shape
  x = x.reshape(b, d // w[0], w[0], h // w[1], w[1], ww_ // w[2], w[2], c)
  return x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, math.prod(w), c)


def _reverse(windows, w, b, d, h, ww_):
  x = windows.reshape(b, d // w[0], h // w[1], ww_ // w[2], w[0], w[1], w[2], -1)
  return x.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d, h, ww_, -1)


@functools.lru_cache
def _relative_index(window) -> np.ndarray:
  """(N, N) index into the relative position bias table of the full window."""
  coords = np.stack(np.meshgrid(*(np.arange(n) for n in window), indexing="ij")).reshape(3, -1)
  rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + np.array(window) - 1
  return rel[..., 0] * (2 * window[1] - 1) * (2 * window[2] - 1) + rel[..., 1] * (
      2 * window[2] - 1) + rel[..., 2]


def _nearest(n_in: int, n_out: int) -> np.ndarray:
  """torch nearest-neighbour source index of each of `n_out` outputs."""
  return np.minimum(np.floor(np.arange(n_out) * (n_in / n_out)).astype(np.int64), n_in - 1)


@functools.lru_cache
def _fragment_gate(size, window, shift) -> np.ndarray:
  """(nW, N, N) DOVER's gate: the L1 distance between the fragment coordinates (a 1 x 7 x 7
  grid stretched over the feature map) of each token pair of a window."""
  d, h, w = size
  coords = np.stack(np.meshgrid(np.zeros(d, np.int64), _nearest(window[1], h),
                                _nearest(window[2], w), indexing="ij"), -1)[None]
  coords = np.roll(coords, tuple(-s for s in shift), axis=(1, 2, 3))
  win = _partition(coords, window)
  return np.abs(win[:, None, :] - win[:, :, None]).sum(-1).astype(np.float32)


@functools.lru_cache
def _shift_mask(size, window, shift) -> np.ndarray:
  """(nW, N, N) Swin's shifted-window mask: 0 within a region, -100 across."""
  img = np.zeros((1, *size, 1), np.float32)
  count = 0
  ranges = [((slice(-window[k]), slice(-window[k], -shift[k]), slice(-shift[k], None)))
            for k in range(3)]
  for sd in ranges[0]:
    for sh in ranges[1]:
      for sw in ranges[2]:
        img[:, sd, sh, sw] = count
        count += 1
  win = _partition(img, window)[..., 0]
  return np.where(win[:, None, :] - win[:, :, None] != 0, -100.0, 0.0).astype(np.float32)


def _block(params, p, x, cfg: Config, stage: int, shifted: bool):
  b, d, h, w, c = x.shape
  heads = cfg.heads[stage]
  window, shift = _window_size((d, h, w), cfg.window,
                               tuple(n // 2 for n in cfg.window) if shifted else (0, 0, 0))
  y = tl.layer_norm(params, f"{p}.norm1", x, 1e-5)
  pads = [(-n) % win for n, win in zip((d, h, w), window)]
  y = jnp.pad(y, ((0, 0), (0, pads[0]), (0, pads[1]), (0, pads[2]), (0, 0)))
  size = y.shape[1:4]
  if any(shift):
    y = jnp.roll(y, tuple(-s for s in shift), axis=(1, 2, 3))
  n = math.prod(window)
  windows = jnp.reshape(_partition(y, window), (b, -1, n, c))  # (B, nW, N, C)
  qkv = jnp.reshape(tl.linear(params, f"{p}.attn.qkv", windows), (b, -1, n, 3, c))
  rpi = _relative_index(tuple(cfg.window))[:n, :n]
  bias = jnp.moveaxis(params[f"{p}.attn.relative_position_bias_table"][rpi], -1, 0)  # (h, N, N)
  gate = _fragment_gate(size, window, shift)[:, None]  # (nW, 1, N, N)
  if cfg.frag_biases[stage]:
    frag = jnp.moveaxis(params[f"{p}.attn.fragment_position_bias_table"][rpi], -1, 0)
    bias = bias[None] * gate + frag[None] * (1 - gate)
  else:
    bias = jnp.broadcast_to(bias[None], (gate.shape[0], *bias.shape))
  if any(shift):
    bias = bias + _shift_mask(size, window, shift)[:, None]
  out = tl.attention(qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :], heads, logits_bias=bias)
  out = _reverse(jnp.reshape(tl.linear(params, f"{p}.attn.proj", out), (-1, n, c)), window, b,
                 *size)
  if any(shift):
    out = jnp.roll(out, shift, axis=(1, 2, 3))
  x = x + out[:, :d, :h, :w]
  y = tl.linear(params, f"{p}.mlp.fc1", tl.layer_norm(params, f"{p}.norm2", x, 1e-5))
  return x + tl.linear(params, f"{p}.mlp.fc2", jax.nn.gelu(y, approximate=False))


def _merge(params, p, x):
  """PatchMerging: 2x2 neighbours concatenated (x0, x1, x2, x3 order), LayerNorm, linear."""
  h, w = x.shape[2:4]
  x = jnp.pad(x, ((0, 0), (0, 0), (0, h % 2), (0, w % 2), (0, 0)))
  x = jnp.concatenate([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2],
                       x[:, :, 1::2, 1::2]], -1)
  return tl.linear(params, f"{p}.reduction", tl.layer_norm(params, f"{p}.norm", x, 1e-5),
                   bias=False)


def technical_map(params: dict, clips: jnp.ndarray, cfg: Config = Config()) -> jnp.ndarray:
  """(B, T, H, W, 3) normalised fragment clips -> (B, T / 2, H / 32, W / 32) head outputs."""
  bb = "technical_backbone"
  b, t, h, w, c = clips.shape
  pads = ((0, 0), (0, -t % 2), (0, -h % 4), (0, -w % 4), (0, 0))
  x = jnp.pad(clips, pads)
  t, h, w = x.shape[1:4]
  x = jnp.reshape(x, (b, t // 2, 2, h // 4, 4, w // 4, 4, c))
  x = jnp.einsum("bdphqwrc,ocpqr->bdhwo", x, params[f"{bb}.patch_embed.proj.weight"],
                 precision=tl.HIGHEST) + params[f"{bb}.patch_embed.proj.bias"]
  x = tl.layer_norm(params, f"{bb}.patch_embed.norm", x, 1e-5)
  for i, depth in enumerate(cfg.depths):
    for j in range(depth):
      x = _block(params, f"{bb}.layers.{i}.blocks.{j}", x, cfg, i, j % 2 == 1)
    if i < len(cfg.depths) - 1:
      x = _merge(params, f"{bb}.layers.{i}.downsample", x)
  x = tl.layer_norm(params, f"{bb}.norm", x, 1e-5)
  hid = params["technical_head.fc_hid.weight"][:, :, 0, 0, 0]
  y = jnp.einsum("...c,oc->...o", x, hid, precision=tl.HIGHEST) + params[
      "technical_head.fc_hid.bias"]
  last = params["technical_head.fc_last.weight"][:, :, 0, 0, 0]
  y = jnp.einsum("...c,oc->...o", jax.nn.gelu(y, approximate=False), last,
                 precision=tl.HIGHEST) + params["technical_head.fc_last.bias"]
  return y[..., 0]


def rescale(raw: float) -> float:
  """Mean head output -> the official technical score, 0-100."""
  return 100.0 / (1.0 + math.exp(-(raw - TECHNICAL_MEAN) / TECHNICAL_SCALE))


def make_dover(params: dict, cfg: Config = Config()):
  """(uint8 (96, H, W, 3) frames at `sample_plan`'s indices, offsets_h, offsets_w) -> the DOVER
  technical score (0-100)."""
  jitted = jax.jit(functools.partial(technical_map, cfg=cfg))

  def score(clip_thwc: np.ndarray, offsets_h: np.ndarray, offsets_w: np.ndarray) -> float:
    clips = fragment_clips(clip_thwc, offsets_h, offsets_w)
    return rescale(float(jnp.mean(jitted(params, jnp.asarray(clips)))))
  return score
