"""Functional layers over PyTorch-layout weights (a dict name -> array, state_dict names), for
the ports of MUSIQ, CLIP-IQA and DOVER: each reads `params[f"{prefix}.weight"]` and friends
as torch stores them, so an official state_dict loads without renaming or transposing.
All matmuls and convolutions run at full float32 precision (parity with the references)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST


def linear(params: dict, prefix: str, x: jnp.ndarray, bias: bool = True) -> jnp.ndarray:
  """torch nn.Linear: (..., in) -> (..., out), weight (out, in)."""
  y = jnp.einsum("...i,oi->...o", x, params[f"{prefix}.weight"], precision=HIGHEST)
  return y + params[f"{prefix}.bias"] if bias else y


def layer_norm(params: dict, prefix: str, x: jnp.ndarray, eps: float) -> jnp.ndarray:
  """torch nn.LayerNorm over the last axis."""
  mean = jnp.mean(x, -1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
  return (x - mean) / jnp.sqrt(var + eps) * params[f"{prefix}.weight"] + params[f"{prefix}.bias"]


def group_norm(params: dict, prefix: str, x_nhwc: jnp.ndarray, groups: int,
               eps: float) -> jnp.ndarray:
  """torch nn.GroupNorm on (N, H, W, C): statistics over H, W and the group's channels."""
  n, h, w, c = x_nhwc.shape
  g = jnp.reshape(x_nhwc, (n, h, w, groups, c // groups))
  mean = jnp.mean(g, (1, 2, 4), keepdims=True)
  var = jnp.mean(jnp.square(g - mean), (1, 2, 4), keepdims=True)
  g = (g - mean) / jnp.sqrt(var + eps)
  return jnp.reshape(g, x_nhwc.shape) * params[f"{prefix}.weight"] + params[f"{prefix}.bias"]


def conv2d(x_nhwc: jnp.ndarray, weight_oihw: jnp.ndarray, stride: int = 1,
           padding=((0, 0), (0, 0)), groups: int = 1) -> jnp.ndarray:
  """torch conv2d (cross-correlation) with an OIHW weight on NHWC input, explicit padding."""
  return jax.lax.conv_general_dilated(
      x_nhwc, weight_oihw, (stride, stride), padding,
      dimension_numbers=("NHWC", "OIHW", "NHWC"), feature_group_count=groups,
      precision=HIGHEST)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow 'SAME' padding of one axis (more at the end), as pyiqa's exact_padding_2d."""
  total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, heads: int,
              logits_bias: jnp.ndarray | None = None, keep: jnp.ndarray | None = None,
              fill: float = -1e3) -> jnp.ndarray:
  """Softmax attention of (..., Lq, D) queries over (..., Lk, D) keys/values with `heads`
  heads of D / heads channels, scale head_dim^-0.5; `logits_bias` (broadcast to
  (..., heads, Lq, Lk)) is added to the logits, and where `keep` (broadcast likewise) is False
  the logit is replaced by `fill` (MUSIQ's masked_fill)."""
  *lead, lq, d = q.shape
  split = lambda t: jnp.swapaxes(jnp.reshape(t, (*t.shape[:-1], heads, d // heads)), -2, -3)
  logits = jnp.einsum("...qd,...kd->...qk", split(q), split(k), precision=HIGHEST)
  logits = logits * (d // heads) ** -0.5
  if logits_bias is not None:
    logits = logits + logits_bias
  if keep is not None:
    logits = jnp.where(keep, logits, fill)
  out = jnp.einsum("...qk,...kd->...qd", jax.nn.softmax(logits, -1), split(v), precision=HIGHEST)
  return jnp.reshape(jnp.swapaxes(out, -2, -3), (*lead, lq, d))
