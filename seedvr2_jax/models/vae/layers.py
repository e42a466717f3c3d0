"""Causal video VAE building blocks, channels-last (B, T, H, W, C), named like the official ones.

Temporal causality: every 3-D conv sees, in front of its input, either k_t - 1 copies of the
first frame (the first chunk of a video) or the last k_t - s_t frames of its input in the previous
chunk (`CausalState`), so a video processed in chunks equals the one-pass result. A first frame
alone in its chunk sees only itself, so its conv sums the temporal taps' kernels. GroupNorm and
the mid-block attention work per frame, so they need no temporal state.
"""

from __future__ import annotations

import math

import einops
import jax
import jax.numpy as jnp
from flax import nnx

from seedvr2_jax.models.vae.config import VAEConfig

GN_EPS = 1e-6
# cuDNN runs convolutions over tensors of 2^31 elements or more with very slow kernels, so
# larger convs run in groups of output frames below that size (docs/benchmarks.md, VAE).
CONV_MAX_ELEMENTS = 2**31 - 1
# Stride-1 temporal kernels run as one 2-D conv over the k_t temporal taps stacked on channels
# ("fold", faster than cuDNN's 3-D conv: docs/benchmarks.md, VAE); the stacked input is built
# per group of output frames of at most this many elements. 1x1x1 convs are matmuls over
# channels, which keep the channels-last layout.
FOLD_MAX_ELEMENTS = 2**30
# Query rows per block of the mid-block attention (bounds the (rows, H*W) logits in memory).
ATTENTION_QUERY_BLOCK = 4096


class CausalState:
  """Temporal caches of all causal convs for one chunk.

  prev: None for the first (or only) chunk of a video, else {conv key: cached frames} from the
  previous chunk. next: filled by every conv with what the following chunk needs.
  """

  def __init__(self, prev: dict | None = None):
    self.prev = prev
    self.next: dict = {}

  @property
  def first(self) -> bool:
    return self.prev is None


def _param(value, dtype):
  return nnx.Param(value.astype(jnp.dtype(dtype)))


class CausalConv3d(nnx.Module):
  """Conv3d (kernel DHWIO) with causal temporal padding and zero spatial padding."""

  def __init__(self, cfg: VAEConfig, cin: int, cout: int, kernel: tuple[int, int, int],
               stride: tuple[int, int, int] = (1, 1, 1), spatial_pad=((1, 1), (1, 1)), *,
               rngs: nnx.Rngs):
    fan_in = cin * math.prod(kernel)
    bound = 1 / math.sqrt(fan_in)
    self.kernel = _param(jax.random.uniform(rngs.params(), (*kernel, cin, cout), jnp.float32,
                                            -bound, bound), cfg.param_dtype)
    self.bias = _param(jax.random.uniform(rngs.params(), (cout,), jnp.float32, -bound, bound),
                       cfg.param_dtype)
    self.kernel_size, self.stride = tuple(kernel), tuple(stride)
    self.spatial_pad = tuple(tuple(p) for p in spatial_pad)
    self.dtype = jnp.dtype(cfg.dtype)
    self.cache_key = ""  # set by the autoencoder to the conv's path

  def __call__(self, x: jnp.ndarray, state: CausalState) -> jnp.ndarray:
    kt, st = self.kernel_size[0], self.stride[0]
    keep = kt - st
    x = x.astype(self.dtype)
    if state.first and x.shape[1] == 1:
      # An image or a video's first frame alone: every tap sees that frame, so the conv is one
      # 2-D conv with the taps' kernels summed, and the cache is that frame repeated.
      if keep > 0:
        state.next[self.cache_key] = jnp.repeat(x, keep, axis=1)
      return self._conv_first_frame(x)
    if state.first:
      head = jnp.repeat(x[:, :1], kt - 1, axis=1)
    else:
      head = state.prev[self.cache_key].astype(self.dtype) if keep > 0 else x[:, :0]
    padded = _Padded(head, x)
    if keep > 0:
      state.next[self.cache_key] = padded.frames(padded.length - keep, padded.length)
    return self._conv(padded)

  def _conv_first_frame(self, x: jnp.ndarray) -> jnp.ndarray:
    """(B, 1, H, W, C) -> (B, 1, H', W', C'): the conv of the frame repeated k_t times."""
    kernel = self.kernel[...].astype(jnp.float32).sum(axis=0).astype(self.dtype)
    y = jax.lax.conv_general_dilated(x[:, 0], kernel, self.stride[1:], self.spatial_pad,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y[:, None] + self.bias[...].astype(self.dtype)

  def _conv(self, padded: "_Padded") -> jnp.ndarray:
    """Valid temporal conv (+ bias) of the padded input, in groups of output frames."""
    kt, st = self.kernel_size[0], self.stride[0]
    kernel, bias = self.kernel[...].astype(self.dtype), self.bias[...].astype(self.dtype)
    x = padded.x
    batch, out_frames = x.shape[0], (padded.length - kt) // st + 1
    frame = math.prod(x.shape[2:]) * batch
    if self.kernel_size == (1, 1, 1) and self.stride == (1, 1, 1):
      return jnp.einsum("bthwc,cd->bthwd", x, kernel[0, 0, 0]) + bias
    if st == 1:
      kernel_2d = kernel.transpose(1, 2, 0, 3, 4).reshape(*kernel.shape[1:3], -1, kernel.shape[4])

      def conv(a, b):  # output frames [a, b): the kt taps stacked on channels, one 2-D conv
        taps = jnp.concatenate([padded.frames(a + i, b + i) for i in range(kt)], axis=-1)
        y = jax.lax.conv_general_dilated(
            taps.reshape(batch * (b - a), *taps.shape[2:]), kernel_2d, self.stride[1:],
            self.spatial_pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y.reshape(batch, b - a, *y.shape[1:]) + bias

      group = FOLD_MAX_ELEMENTS // (kt * frame)
    else:

      def conv(a, b):
        return jax.lax.conv_general_dilated(
            padded.frames(a * st, (b - 1) * st + kt), kernel, self.stride,
            ((0, 0), *self.spatial_pad), dimension_numbers=("NDHWC", "DHWIO", "NDHWC")) + bias

      group = (CONV_MAX_ELEMENTS // frame - kt) // st + 1
    out_frame = frame // x.shape[-1] * kernel.shape[-1] // (self.stride[1] * self.stride[2])
    group = max(1, min(group, CONV_MAX_ELEMENTS // out_frame))
    return jnp.concatenate([conv(a, min(a + group, out_frames))
                            for a in range(0, out_frames, group)], axis=1)


class _Padded:
  """The causally padded input [head frames, x] without materialising the concatenation."""

  def __init__(self, head: jnp.ndarray, x: jnp.ndarray):
    self.head, self.x = head, x
    self.length = head.shape[1] + x.shape[1]

  def frames(self, lo: int, hi: int) -> jnp.ndarray:
    """Padded frames [lo, hi)."""
    n = self.head.shape[1]
    parts = ([self.head[:, lo:min(hi, n)]] if lo < n else []) + \
        ([self.x[:, max(lo - n, 0):hi - n]] if hi > n else [])
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)


class GroupNorm(nnx.Module):
  """GroupNorm applied to every frame separately (statistics in float32)."""

  def __init__(self, cfg: VAEConfig, channels: int):
    self.groups = cfg.norm_num_groups
    self.scale = _param(jnp.ones((channels,)), cfg.param_dtype)
    self.bias = _param(jnp.zeros((channels,)), cfg.param_dtype)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, t, h, w, c = x.shape
    per_group = c // self.groups

    def group_mean(channel_sums):  # (B, T, C) sums over H, W -> (B, T, 1, 1, C) group means
      means = channel_sums.reshape(b, t, self.groups, per_group).sum(-1) / (h * w * per_group)
      return jnp.repeat(means, per_group, axis=-1)[:, :, None, None, :]

    # Per-channel sums over (H, W) first, then per group: column reductions over the
    # channels-last layout, without the (groups, channels per group) relayout of the
    # activation. Two passes (the mean, then the centred squares) as the official GroupNorm.
    xf = x.astype(jnp.float32)
    mean = group_mean(jnp.sum(xf, axis=(2, 3)))
    var = group_mean(jnp.sum(jnp.square(xf - mean), axis=(2, 3)))
    y = (xf - mean) * jax.lax.rsqrt(var + GN_EPS)
    return (y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(
        x.dtype)


class ResnetBlock3D(nnx.Module):
  """GN -> SiLU -> conv1 -> GN -> SiLU -> conv2, plus a 1x1x1 shortcut when channels change."""

  def __init__(self, cfg: VAEConfig, cin: int, cout: int, *, rngs: nnx.Rngs):
    kt = 3 if cfg.time_receptive_field == "full" else 1
    self.norm1 = GroupNorm(cfg, cin)
    self.conv1 = CausalConv3d(cfg, cin, cout, (kt, 3, 3), rngs=rngs)
    self.norm2 = GroupNorm(cfg, cout)
    self.conv2 = CausalConv3d(cfg, cout, cout, (3, 3, 3), rngs=rngs)
    self.conv_shortcut = (CausalConv3d(cfg, cin, cout, (1, 1, 1), spatial_pad=((0, 0), (0, 0)),
                                       rngs=rngs) if cin != cout else None)

  def __call__(self, x: jnp.ndarray, state: CausalState) -> jnp.ndarray:
    h = self.conv1(jax.nn.silu(self.norm1(x)), state)
    h = self.conv2(jax.nn.silu(self.norm2(h)), state)
    shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x, state)
    return shortcut.astype(h.dtype) + h


class Downsample3D(nnx.Module):
  """Pad right/bottom by one, then a stride-2 conv (and stride 2 in time if temporal)."""

  def __init__(self, cfg: VAEConfig, channels: int, temporal: bool, *, rngs: nnx.Rngs):
    kt, st = (3, 2) if temporal else (1, 1)
    self.conv = CausalConv3d(cfg, channels, channels, (kt, 3, 3), (st, 2, 2),
                             spatial_pad=((0, 1), (0, 1)), rngs=rngs)

  def __call__(self, x: jnp.ndarray, state: CausalState) -> jnp.ndarray:
    return self.conv(x, state)


class Upsample3D(nnx.Module):
  """1x1x1 conv to C * r channels, depth/pixel shuffle, then a causal 3x3x3 conv.

  In the first chunk a temporal upsampler drops output frame 1 (the copy of the first frame),
  so T latent frames become 2T - 1.
  """

  def __init__(self, cfg: VAEConfig, channels: int, temporal: bool, *, rngs: nnx.Rngs):
    self.temporal = temporal
    ratio = 4 * (2 if temporal else 1)
    self.upscale_conv = CausalConv3d(cfg, channels, channels * ratio, (1, 1, 1),
                                     spatial_pad=((0, 0), (0, 0)), rngs=rngs)
    self.conv = CausalConv3d(cfg, channels, channels, (3, 3, 3), rngs=rngs)

  def __call__(self, x: jnp.ndarray, state: CausalState) -> jnp.ndarray:
    y = einops.rearrange(self.upscale_conv(x, state), "b f h w (x y z c) -> b (f z) (h x) (w y) c",
                         x=2, y=2, z=2 if self.temporal else 1)
    if self.temporal and state.first:
      y = jnp.concatenate([y[:, :1], y[:, 2:]], axis=1)
    return self.conv(y, state)


def _attend_frame(q, k, v, scale):
  """Single-head attention of one frame, q (N, C); softmax in float32; query rows in blocks."""
  n = q.shape[0]
  block = min(ATTENTION_QUERY_BLOCK, n)
  pad = -n % block

  def rows(q_rows):
    logits = jnp.einsum("qc,kc->qk", q_rows, k, preferred_element_type=jnp.float32) * scale
    p = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("qk,kc->qc", p, v, preferred_element_type=jnp.float32).astype(v.dtype)

  q_blocks = jnp.pad(q, ((0, pad), (0, 0))).reshape(-1, block, q.shape[-1])
  return jax.lax.map(rows, q_blocks).reshape(-1, q.shape[-1])[:n]


class Attention(nnx.Module):
  """Mid-block self-attention over the pixels of each frame (diffusers Attention, one head)."""

  def __init__(self, cfg: VAEConfig, channels: int, *, rngs: nnx.Rngs):
    linear = lambda: nnx.Linear(channels, channels, dtype=jnp.dtype(cfg.dtype),
                                param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)
    self.group_norm = GroupNorm(cfg, channels)
    self.to_q, self.to_k, self.to_v = linear(), linear(), linear()
    self.to_out = nnx.List([linear()])

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, t, h, w, c = x.shape
    hidden = self.group_norm(x).reshape(b * t, h * w, c)
    q, k, v = self.to_q(hidden), self.to_k(hidden), self.to_v(hidden)
    out = jax.lax.map(lambda qkv: _attend_frame(*qkv, 1 / math.sqrt(c)), (q, k, v))
    return x + self.to_out[0](out).reshape(x.shape).astype(x.dtype)


class MidBlock3D(nnx.Module):
  """resnet -> attention -> resnet (official UNetMidBlock3D)."""

  def __init__(self, cfg: VAEConfig, channels: int, *, rngs: nnx.Rngs):
    self.resnets = nnx.List([ResnetBlock3D(cfg, channels, channels, rngs=rngs) for _ in range(2)])
    self.attentions = nnx.List([Attention(cfg, channels, rngs=rngs)] if cfg.mid_attention else [])

  def __call__(self, x: jnp.ndarray, state: CausalState) -> jnp.ndarray:
    x = self.resnets[0](x, state)
    if self.attentions:
      x = self.attentions[0](x)
    return self.resnets[1](x, state)
