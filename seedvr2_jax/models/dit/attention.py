"""NaSwinAttention: qkv projection, q/k RMS norm, 3-D RoPE and Swin-MM window attention."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import nnx

from seedvr2_jax.models.dit import layers
from seedvr2_jax.models.dit.config import NaDiTConfig
from seedvr2_jax.ops import rope as rope_lib
from seedvr2_jax.ops import window_attention as wattn
from seedvr2_jax.ops import window_plan

WindowKey = tuple[tuple[int, int, int], str]


@dataclasses.dataclass(frozen=True, eq=False)
class AttentionContext:
  """Per-forward static layouts and RoPE angles, shared by all layers with the same windows.

  layouts:  {(window, method): AttentionLayout} for the batch's token grid.
  vid_angles: {(window, method): (B|1, N, 1, P) float32} or None without RoPE.
  txt_angles: (1, L, 1, P) float32 or None (text RoPE is 3B only).
  txt_len_b: (B,) int32 valid text tokens per sample.
  """

  layouts: dict
  vid_angles: dict | None
  txt_angles: jnp.ndarray | None
  txt_len_b: jnp.ndarray
  backend: str
  round_qkv_bf16: bool


def build_context(cfg: NaDiTConfig, grid: tuple[int, int, int], txt_len: int,
                  txt_len_b: jnp.ndarray) -> AttentionContext:
  """Resolves every layer's window layout (numpy, trace time) and RoPE angles for a token grid."""
  keys = sorted(set(zip(cfg.window, cfg.window_method)))
  layouts = {k: wattn.attention_layout(grid, k[0], k[1], txt_len) for k in keys}
  vid_angles, txt_angles = None, None
  if cfg.rope_type is not None:
    freqs = cfg.rope_freqs
    vid_angles = {}
    for key in keys:
      plan = window_plan.window_plan(grid, *key)
      if cfg.rope_type == "mmrope3d":
        # Video positions (L + t, h, w): the temporal index is offset by the text length.
        offset = jnp.stack([txt_len_b, jnp.zeros_like(txt_len_b), jnp.zeros_like(txt_len_b)], -1)
        pos = jnp.asarray(plan.local_pos)[None] + offset[:, None, :]
      else:
        pos = jnp.asarray(rope_lib.normalized_positions(plan.local_pos, plan.extent))[None]
      vid_angles[key] = rope_lib.axial_angles(pos, freqs)[:, :, None, :]
    if cfg.rope_type == "mmrope3d":
      pos = np.repeat(np.arange(txt_len)[:, None], 3, axis=1)
      txt_angles = rope_lib.axial_angles(jnp.asarray(pos), freqs)[None, :, None, :]
  return AttentionContext(layouts, vid_angles, txt_angles, txt_len_b.astype(jnp.int32),
                          cfg.attention_backend, cfg.round_qkv_bf16)


class NaSwinAttention(nnx.Module):
  """Window attention of one block; weights per stream (`vid`/`txt`) or shared (`all`)."""

  def __init__(self, cfg: NaDiTConfig, layer: int, rngs: nnx.Rngs):
    inner = cfg.heads * cfg.head_dim
    shared = cfg.shared(layer, "qkv")
    self.proj_qkv = layers.MM(lambda: layers.dense(
        cfg, cfg.vid_dim, 3 * inner, (layers.EMBED, layers.HEADS), use_bias=cfg.qk_bias,
        rngs=rngs), shared)
    self.proj_out = layers.MM(lambda: layers.dense(
        cfg, inner, cfg.vid_dim, (layers.HEADS, layers.EMBED), rngs=rngs), shared)
    shared_norm = cfg.shared(layer, "qk_norm")
    self.norm_q = layers.MM(lambda: layers.RMSNorm(cfg, cfg.head_dim), shared_norm)
    self.norm_k = layers.MM(lambda: layers.RMSNorm(cfg, cfg.head_dim), shared_norm)
    self.window_key: WindowKey = (cfg.window[layer], cfg.window_method[layer])
    self.heads, self.head_dim = cfg.heads, cfg.head_dim

  def _qkv(self, x, stream: str, angles):
    """x (B, S, D) -> q, k, v (B, S, H, d) in x's dtype; q/k normalised and rotated."""
    proj = getattr(self.proj_qkv, f"for_{stream}")
    qkv = proj(x).reshape(*x.shape[:2], 3, self.heads, self.head_dim)
    q = getattr(self.norm_q, f"for_{stream}")(qkv[:, :, 0])
    k = getattr(self.norm_k, f"for_{stream}")(qkv[:, :, 1])
    if angles is not None:
      q, k = rope_lib.apply_rope(q, angles), rope_lib.apply_rope(k, angles)
    return q.astype(x.dtype), k.astype(x.dtype), qkv[:, :, 2]

  def __call__(self, a_vid: jnp.ndarray, a_txt: jnp.ndarray, ctx: AttentionContext):
    """a_vid (B, N, D), a_txt (B, L, D) -> (out_vid (B, N, D), out_txt (B, L, D))."""
    vid_angles = None if ctx.vid_angles is None else ctx.vid_angles[self.window_key]
    qkv_vid = self._qkv(a_vid, "vid", vid_angles)
    qkv_txt = self._qkv(a_txt, "txt", ctx.txt_angles)
    out_vid, out_txt = wattn.window_attention(
        *qkv_vid, *qkv_txt, ctx.txt_len_b, layout=ctx.layouts[self.window_key],
        backend=ctx.backend, round_bf16=ctx.round_qkv_bf16)
    out_vid = out_vid.reshape(*out_vid.shape[:2], -1)
    out_txt = out_txt.reshape(*out_txt.shape[:2], -1)
    return self.proj_out.for_vid(out_vid), self.proj_out.for_txt(out_txt)
