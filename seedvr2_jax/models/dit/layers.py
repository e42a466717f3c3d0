"""NaDiT building blocks, named like the official modules so checkpoints map by name.

Numerics: norms, modulation and gates run in float32; Linear layers compute in `cfg.dtype`
(bfloat16 for speed) with parameters stored in `cfg.param_dtype`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from seedvr2_jax.models.dit.config import NaDiTConfig
from seedvr2_jax.parallel.sharding import ACT_BATCH, ACT_MLP, constrain

# Logical axis names of parameters (mapped to mesh axes by the training config).
EMBED, HEADS, MLP, MOD = "embed", "heads", "mlp", "modulation"


def _named(init, names: Sequence[str | None]):
  return nnx.with_partitioning(init, tuple(names), eager_sharding=False)


def dense(cfg: NaDiTConfig, in_dim: int, out_dim: int, names: tuple, *, rngs: nnx.Rngs,
          use_bias: bool = True) -> nnx.Linear:
  """Linear layer computing in cfg.dtype; `names` are the logical axes of (in, out)."""
  return nnx.Linear(
      in_dim, out_dim, use_bias=use_bias, dtype=jnp.dtype(cfg.dtype),
      param_dtype=jnp.dtype(cfg.param_dtype),
      kernel_init=_named(nnx.initializers.lecun_normal(), names),
      bias_init=_named(nnx.initializers.zeros_init(), names[1:]), rngs=rngs)


def rms_norm(x: jnp.ndarray, eps: float, scale: jnp.ndarray | None = None) -> jnp.ndarray:
  """x * rsqrt(mean(x^2) + eps) [* scale] over the last axis, in float32."""
  x = x.astype(jnp.float32)
  y = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)
  return y if scale is None else y * scale.astype(jnp.float32)


class RMSNorm(nnx.Module):
  """RMS norm with a learnable weight (official FusedRMSNorm, elementwise_affine=True)."""

  def __init__(self, cfg: NaDiTConfig, dim: int, name: str | None = None):
    self.eps = cfg.norm_eps
    self.scale = nnx.Param(jnp.ones((dim,), jnp.dtype(cfg.param_dtype)),
                           out_sharding=(name,), eager_sharding=False)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return rms_norm(x, self.eps, self.scale[...])


class MM(nnx.Module):
  """One shared copy (`all`) or separate `vid` and `txt` copies of a sub-module (MMModule).

  `vid_only` drops the text copy (the 3B last block); `txt` is then None.
  """

  def __init__(self, make: Callable[[], nnx.Module], shared: bool, vid_only: bool = False):
    self.shared = shared
    if shared:
      self.all = make()
    else:
      self.vid = make()
      self.txt = None if vid_only else make()
    self.vid_only = vid_only

  @property
  def for_vid(self) -> nnx.Module:
    return self.all if self.shared else self.vid

  @property
  def for_txt(self) -> nnx.Module | None:
    if self.vid_only:
      return None
    return self.all if self.shared else self.txt


class AdaSingle(nnx.Module):
  """Learnable shift/scale/gate added to the shared time embedding (no `1 +` on scale).

  The embedding slot of one ada layer is (B, D, 3) = (shift, scale, gate) along the last axis.
  """

  def __init__(self, cfg: NaDiTConfig, layers: Sequence[str], gates: bool, rngs: nnx.Rngs):
    dim, dtype = cfg.vid_dim, jnp.dtype(cfg.param_dtype)

    def param(offset: float):
      value = jax.random.normal(rngs.params(), (dim,), jnp.float32) / math.sqrt(dim) + offset
      return nnx.Param(value.astype(dtype), out_sharding=(EMBED,), eager_sharding=False)

    for layer in layers:
      setattr(self, f"{layer}_shift", param(0.0))
      setattr(self, f"{layer}_scale", param(1.0))
      if gates:
        setattr(self, f"{layer}_gate", param(0.0))

  def modulate(self, x: jnp.ndarray, emb_bd3: jnp.ndarray, layer: str) -> jnp.ndarray:
    """x (B, N, D) -> x * (e_scale + scale) + (e_shift + shift), float32."""
    e = emb_bd3[:, None].astype(jnp.float32)
    scale = e[..., 1] + getattr(self, f"{layer}_scale")[...].astype(jnp.float32)
    shift = e[..., 0] + getattr(self, f"{layer}_shift")[...].astype(jnp.float32)
    return x.astype(jnp.float32) * scale + shift

  def gate(self, x: jnp.ndarray, emb_bd3: jnp.ndarray, layer: str) -> jnp.ndarray:
    """x (B, N, D) -> x * (e_gate + gate), float32."""
    gate = emb_bd3[:, None, :, 2].astype(jnp.float32)
    return x.astype(jnp.float32) * (gate + getattr(self, f"{layer}_gate")[...].astype(jnp.float32))


class SwiGLUMLP(nnx.Module):
  """proj_out(silu(proj_in_gate(x)) * proj_in(x)), no biases (3B)."""

  def __init__(self, cfg: NaDiTConfig, rngs: nnx.Rngs):
    d, h = cfg.vid_dim, cfg.mlp_hidden
    self.proj_in_gate = dense(cfg, d, h, (EMBED, MLP), use_bias=False, rngs=rngs)
    self.proj_in = dense(cfg, d, h, (EMBED, MLP), use_bias=False, rngs=rngs)
    self.proj_out = dense(cfg, h, d, (MLP, EMBED), use_bias=False, rngs=rngs)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    gate, value = (checkpoint_name(p(x), "mlp_in") for p in (self.proj_in_gate, self.proj_in))
    hidden = jax.nn.silu(gate) * value
    return checkpoint_name(
        self.proj_out(constrain(hidden, ACT_BATCH, *(None,) * (x.ndim - 2), ACT_MLP)),
        "mlp_out")


class GeluMLP(nnx.Module):
  """proj_out(gelu_tanh(proj_in(x))), with biases (7B)."""

  def __init__(self, cfg: NaDiTConfig, rngs: nnx.Rngs):
    d, h = cfg.vid_dim, cfg.mlp_hidden
    self.proj_in = dense(cfg, d, h, (EMBED, MLP), rngs=rngs)
    self.proj_out = dense(cfg, h, d, (MLP, EMBED), rngs=rngs)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    hidden = jax.nn.gelu(checkpoint_name(self.proj_in(x), "mlp_in"), approximate=True)
    return checkpoint_name(
        self.proj_out(constrain(hidden, ACT_BATCH, *(None,) * (x.ndim - 2), ACT_MLP)),
        "mlp_out")


def make_mlp(cfg: NaDiTConfig, rngs: nnx.Rngs) -> nnx.Module:
  return SwiGLUMLP(cfg, rngs) if cfg.mlp_type == "swiglu" else GeluMLP(cfg, rngs)


def timestep_sinusoid(timestep_b: jnp.ndarray, dim: int = 256) -> jnp.ndarray:
  """(B,) timesteps on the 0..1000 scale -> (B, dim) [sin | cos] (diffusers, no flip/shift)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
  angles = timestep_b.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class TimeEmbedding(nnx.Module):
  """sinusoid(256) -> proj_in -> SiLU -> proj_hid -> SiLU -> proj_out (6D), float32."""

  def __init__(self, cfg: NaDiTConfig, rngs: nnx.Rngs):
    f32 = dataclasses.replace(cfg, dtype="float32")
    d = cfg.vid_dim
    self.proj_in = dense(f32, 256, d, (None, EMBED), rngs=rngs)
    self.proj_hid = dense(f32, d, d, (EMBED, None), rngs=rngs)
    self.proj_out = dense(f32, d, cfg.emb_dim, (EMBED, MOD), rngs=rngs)

  def __call__(self, timestep_b: jnp.ndarray) -> jnp.ndarray:
    emb = jax.nn.silu(self.proj_in(timestep_sinusoid(timestep_b)))
    return self.proj_out(jax.nn.silu(self.proj_hid(emb)))
