"""MUSIQ (Ke et al., "MUSIQ: Multi-scale Image Quality Transformer", ICCV 2021), no-reference,
higher is better: a port of pyiqa's `musiq` (its PyTorch re-implementation of the official JAX
model) with the KonIQ-10k weights, scores about 0-100.

Input: the image in [0, 1] -> 2x - 1; a multi-scale patch sequence: the image resized (torch
bicubic, no antialiasing) to longer sides 224 and 384, and at its own resolution, each cut into
32x32 patches ('SAME' zero padding); per patch its hashed 10x10 spatial position, its scale index
and a mask; the two resized scales padded to ceil(L / 32)^2 patches. Each patch: a ResNet root
(weight-standardised 7x7/2 conv, GroupNorm, ReLU, 3x3/2 max pool) and one bottleneck block ->
8x8x256 -> a linear embedding; a class token, spatial and scale embeddings, a 14-layer ViT
(384 wide, 6 heads, masked keys' logits set to -1e3) and a linear head on the class token.

Weights: pyiqa's `musiq_koniq_ckpt-e95806b9.pth` (its state_dict names), from pyiqa's release
files (github.com/chaofengc/IQA-PyTorch/releases), placed in the `--iqa-weights` folder.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from seedvr2_jax.data import resize as resize_lib
from seedvr2_jax.metrics import torch_layers as tl
from seedvr2_jax.metrics import torch_weights

FILES = ("musiq_koniq_ckpt-e95806b9.pth", "musiq_koniq.pth", "musiq_koniq.safetensors")
SOURCE = "pyiqa's MUSIQ KonIQ-10k checkpoint, IQA-PyTorch release files"
ROOT = 64  # ResNet root width; the bottleneck outputs 4x
PATCH = 32


@dataclasses.dataclass(frozen=True)
class Config:
  hidden: int = 384
  mlp: int = 1152
  heads: int = 6
  layers: int = 14
  grid: int = 10  # hashed spatial positions: grid x grid
  longer_sides: tuple[int, ...] = (224, 384)


def expected_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
  """pyiqa MUSIQ state_dict names -> shapes."""
  shapes = {"conv_root.weight": (ROOT, 3, 7, 7), "gn_root.weight": (ROOT,),
            "gn_root.bias": (ROOT,),
            "block1.conv1.weight": (ROOT, ROOT, 1, 1), "block1.conv2.weight": (ROOT, ROOT, 3, 3),
            "block1.conv3.weight": (4 * ROOT, ROOT, 1, 1),
            "block1.conv_proj.weight": (4 * ROOT, ROOT, 1, 1),
            "embedding.weight": (cfg.hidden, 4 * ROOT * (PATCH // 4) ** 2),
            "embedding.bias": (cfg.hidden,),
            "transformer_encoder.posembed_input.position_emb": (1, cfg.grid ** 2, cfg.hidden),
            "transformer_encoder.scaleembed_input.scale_emb": (len(cfg.longer_sides) + 1,
                                                               cfg.hidden),
            "transformer_encoder.cls": (1, 1, cfg.hidden),
            "transformer_encoder.encoder_norm.weight": (cfg.hidden,),
            "transformer_encoder.encoder_norm.bias": (cfg.hidden,),
            "head.weight": (1, cfg.hidden), "head.bias": (1,)}  # KonIQ: one MOS output
  for name, width in (("gn1", ROOT), ("gn2", ROOT), ("gn3", 4 * ROOT), ("gn_proj", 4 * ROOT)):
    shapes.update({f"block1.{name}.weight": (width,), f"block1.{name}.bias": (width,)})
  for i in range(cfg.layers):
    b = f"transformer_encoder.transformer.encoderblock_{i}"
    for norm in ("norm1", "norm2"):
      shapes.update({f"{b}.{norm}.weight": (cfg.hidden,), f"{b}.{norm}.bias": (cfg.hidden,)})
    for proj in ("query", "key", "value", "out"):
      shapes.update({f"{b}.attention.{proj}.weight": (cfg.hidden, cfg.hidden),
                     f"{b}.attention.{proj}.bias": (cfg.hidden,)})
    shapes.update({f"{b}.mlp.fc1.weight": (cfg.mlp, cfg.hidden), f"{b}.mlp.fc1.bias": (cfg.mlp,),
                   f"{b}.mlp.fc2.weight": (cfg.hidden, cfg.mlp),
                   f"{b}.mlp.fc2.bias": (cfg.hidden,)})
  return shapes


def load_weights(weights_dir: str | None, cfg: Config = Config()) -> dict:
  path = torch_weights.find(weights_dir, FILES, "musiq", SOURCE)
  return torch_weights.read(path, expected_shapes(cfg))


def _hashed_positions(grid: int, count_h: int, count_w: int) -> np.ndarray:
  """(count_h * count_w,) grid cell of each patch (nearest-neighbour hashing, row-major)."""
  rows = np.floor(np.arange(count_h) * grid / count_h).astype(np.int32)
  cols = np.floor(np.arange(count_w) * grid / count_w).astype(np.int32)
  return (rows[:, None] * grid + cols[None, :]).reshape(-1)


def _patches(image_chw: np.ndarray, grid: int, scale: int, length: int | None):
  """(3, H, W) -> (patches (L, 32, 32, 3), positions (L,), scales (L,), mask (L,)), zero
  padded to `length` patches when given."""
  c, h, w = image_chw.shape
  count_h, count_w = -(-h // PATCH), -(-w // PATCH)
  (top, bottom), (left, right) = (tl.same_padding(h, PATCH, PATCH),
                                  tl.same_padding(w, PATCH, PATCH))
  x = np.pad(image_chw, ((0, 0), (top, bottom), (left, right)))
  x = x.reshape(c, count_h, PATCH, count_w, PATCH).transpose(1, 3, 2, 4, 0)
  patches = x.reshape(count_h * count_w, PATCH, PATCH, c)
  n = len(patches)
  positions = _hashed_positions(grid, count_h, count_w)
  scales, mask = np.full(n, scale, np.int32), np.ones(n, bool)
  if length is not None:
    pad = max(length - n, 0)
    patches = np.concatenate([patches, np.zeros((pad, PATCH, PATCH, c), patches.dtype)])[:length]
    positions, scales, mask = (np.concatenate([v, np.zeros(pad, v.dtype)])[:length]
                               for v in (positions, scales, mask))
  return patches, positions, scales, mask


def multiscale_patches(image_hwc: np.ndarray, cfg: Config = Config()):
  """(H, W, 3) in [0, 1] -> (patches (L, 32, 32, 3), positions, scales, mask), all scales."""
  x = np.transpose(np.asarray(image_hwc, np.float32) * 2.0 - 1.0, (2, 0, 1))
  h, w = x.shape[1:]
  parts = []
  for scale, longer in enumerate(sorted(cfg.longer_sides)):
    ratio = longer / max(h, w)
    resized = resize_lib.resize(x, (round(h * ratio), round(w * ratio)), "bicubic")
    parts.append(_patches(resized, cfg.grid, scale, math.ceil(longer / PATCH) ** 2))
  parts.append(_patches(x, cfg.grid, len(cfg.longer_sides), None))
  return tuple(np.concatenate(p) for p in zip(*parts))


def _std_conv(params, name, x, stride):
  """Weight-standardised conv (torch std: unbiased, + 1e-5), 'SAME' zero padding."""
  weight = params[name]
  weight = weight - jnp.mean(weight, (1, 2, 3), keepdims=True)
  std = jnp.sqrt(jnp.sum(jnp.square(weight), (1, 2, 3), keepdims=True)
                 / (math.prod(weight.shape[1:]) - 1))
  k = weight.shape[-1]
  pad = (tl.same_padding(x.shape[1], k, stride), tl.same_padding(x.shape[2], k, stride))
  return tl.conv2d(x, weight / (std + 1e-5), stride, pad)


def _cnn(params, x_nhwc):
  """(N, 32, 32, 3) -> (N, 8, 8, 256): ResNet root and the bottleneck block."""
  x = tl.group_norm(params, "gn_root", _std_conv(params, "conv_root.weight", x_nhwc, 2), 32, 1e-6)
  x = jnp.pad(jax.nn.relu(x), ((0, 0), *(tl.same_padding(n, 3, 2) for n in x.shape[1:3]),
                               (0, 0)))  # zeros: neutral for a max of ReLU outputs
  x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")
  b = "block1"
  identity = tl.group_norm(params, f"{b}.gn_proj", _std_conv(params, f"{b}.conv_proj.weight", x, 1),
                           32, 1e-4)
  y = jax.nn.relu(tl.group_norm(params, f"{b}.gn1", _std_conv(params, f"{b}.conv1.weight", x, 1),
                                32, 1e-4))
  y = jax.nn.relu(tl.group_norm(params, f"{b}.gn2", _std_conv(params, f"{b}.conv2.weight", y, 1),
                                32, 1e-4))
  y = tl.group_norm(params, f"{b}.gn3", _std_conv(params, f"{b}.conv3.weight", y, 1), 32, 1e-4)
  return jax.nn.relu(y + identity)


def forward(params: dict, patches, positions, scales, mask, cfg: Config) -> jnp.ndarray:
  """One image's patch sequence (as `multiscale_patches`) -> (1,) head output, the MOS."""
  x = _cnn(params, patches)
  x = tl.linear(params, "embedding", jnp.reshape(x, (x.shape[0], -1)))
  enc = "transformer_encoder"
  x = x + params[f"{enc}.posembed_input.position_emb"][0][positions]
  x = x + params[f"{enc}.scaleembed_input.scale_emb"][scales]
  x = jnp.concatenate([params[f"{enc}.cls"][0], x])
  keep = jnp.concatenate([jnp.ones((1,), bool), mask])
  keep = keep[None, :, None] & keep[None, None, :]  # (heads, query, key) broadcast
  for i in range(cfg.layers):
    b = f"{enc}.transformer.encoderblock_{i}"
    y = tl.layer_norm(params, f"{b}.norm1", x, 1e-6)
    q, k, v = (tl.linear(params, f"{b}.attention.{p}", y) for p in ("query", "key", "value"))
    x = x + tl.linear(params, f"{b}.attention.out", tl.attention(q, k, v, cfg.heads, keep=keep))
    y = tl.layer_norm(params, f"{b}.norm2", x, 1e-6)
    y = tl.linear(params, f"{b}.mlp.fc1", y)
    x = x + tl.linear(params, f"{b}.mlp.fc2", jax.nn.gelu(y, approximate=False))
  x = tl.layer_norm(params, f"{enc}.encoder_norm", x, 1e-6)
  return tl.linear(params, "head", x[0])


def make_musiq(params: dict, cfg: Config = Config()):
  """(H, W, 3) in [0, 1] -> the MUSIQ score (KonIQ: the head's single output, the MOS)."""
  jitted = jax.jit(functools.partial(forward, cfg=cfg))

  def score(image_hwc: np.ndarray) -> float:
    return float(jitted(params, *multiscale_patches(image_hwc, cfg))[0])
  return score
