"""Swin-MM window attention of the NaDiT: every window of a sample attends over [its video tokens,
the text].

Windows become a batch: window i is laid out as [video tokens of i, all L text tokens, padding],
so its valid tokens form a prefix of length len_i + txt_len and one padded-length attention call
covers all windows (no Python loop). With the splash backend (TPU) the windows are instead packed
as segments of one sequence (`window_packing.py`), without padding each to the largest. Video
outputs are gathered back to token order; each text token's output is the mean over the windows
of its sample (official `unconcat_coalesce`).
`NaSwinAttention` is the block's attention module around it: qkv projection, q/k RMS norm and
3-D RoPE.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from seedvr2_jax.models.dit import layers
from seedvr2_jax.models.dit import rope as rope_lib
from seedvr2_jax.models.dit import window_packing
from seedvr2_jax.models.dit import window_plan as window_plan_lib
from seedvr2_jax.models.dit.config import NaDiTConfig
from seedvr2_jax.ops import attention as attention_lib
from seedvr2_jax.ops import splash
from seedvr2_jax.parallel.sharding import (ACT_BATCH, ACT_HEADS, ACT_TOKENS, ACT_WINDOWS,
                                           constrain)

# Sequences are padded to a multiple of this (tensor-core friendly tiles for cuDNN).
SEQ_MULTIPLE = 64


@dataclasses.dataclass(frozen=True, eq=False)
class AttentionLayout:
  """Static gather indices into the buffer [video tokens (N); text tokens (L)].

  gather_idx: (n, S) int32, buffer row of each slot of each window (padding -> 0).
  vid_slot:   (N,) int32, flat slot i * S + j holding each video token.
  txt_slot:   (n, L) int32, flat slot of text token l in window i.
  vid_len:    (n,) int32, video tokens per window.
  """

  gather_idx: np.ndarray
  vid_slot: np.ndarray
  txt_slot: np.ndarray
  vid_len: np.ndarray

  @property
  def seq_len(self) -> int:
    return self.gather_idx.shape[1]


@functools.lru_cache(maxsize=256)
def attention_layout(grid: tuple[int, int, int], num_windows: tuple[int, int, int], method: str,
                     txt_len: int, seq_multiple: int = SEQ_MULTIPLE) -> AttentionLayout:
  plan = window_plan_lib.window_plan(grid, num_windows, method)
  n, num_tokens = plan.num_windows, int(np.prod(grid))
  seq = plan.max_len + txt_len
  seq += -seq % seq_multiple
  gather_idx = np.zeros((n, seq), np.int32)
  txt_slot = np.zeros((n, txt_len), np.int32)
  for i, length in enumerate(plan.lengths):
    gather_idx[i, :length] = plan.gather_idx[i, :length]
    gather_idx[i, length:length + txt_len] = num_tokens + np.arange(txt_len)
    txt_slot[i] = i * seq + length + np.arange(txt_len)
  window, slot = np.divmod(plan.scatter_idx, plan.max_len)
  vid_slot = (window * seq + slot).astype(np.int32)
  return AttentionLayout(gather_idx, vid_slot, txt_slot, plan.lengths)


def window_attention(q_vid, k_vid, v_vid, q_txt, k_txt, v_txt, txt_len_b, *, layout,
                     backend: str = "auto", round_bf16: bool = False):
  """Windowed multi-modal attention for a batch of same-shape samples.

  Args:
    q_vid, k_vid, v_vid: (B, N, H, d) video queries/keys/values in token order.
    q_txt, k_txt, v_txt: (B, L, H, d) text queries/keys/values (L may include padding).
    txt_len_b: (B,) int32 valid text tokens per sample (<= L).
    layout: `attention_layout(...)` for the samples' token grid and this layer's windows, or
      `window_packing.packed_layout(...)` (splash backend).
    backend, round_bf16: see `attention.attention`.
  Returns:
    (out_vid (B, N, H, d), out_txt (B, L, H, d)); text rows past txt_len_b are unspecified.
  """
  batch, _, heads, head_dim = q_vid.shape
  if isinstance(layout, window_packing.PackedLayout):
    segment_ids = jnp.where(jnp.asarray(layout.txt_pos)[None, :] >= txt_len_b[:, None],
                            layout.txt_slot.shape[0], jnp.asarray(layout.segment)[None, :])
    out = attention_lib.packed_attention(
        _gather(q_vid, q_txt, layout.gather_idx), _gather(k_vid, k_txt, layout.gather_idx),
        _gather(v_vid, v_txt, layout.gather_idx), segment_ids, layout.block_segments,
        round_bf16=round_bf16)
    return _window_outputs(out, layout)
  num_windows, seq = layout.gather_idx.shape
  to_windows = lambda x_vid, x_txt: constrain(_gather(x_vid, x_txt, layout.gather_idx).reshape(
      batch * num_windows, seq, heads, head_dim), ACT_WINDOWS, None, ACT_HEADS, None)
  lengths = (jnp.asarray(layout.vid_len)[None, :] + txt_len_b[:, None]).reshape(-1)
  out = attention_lib.attention(to_windows(q_vid, q_txt), to_windows(k_vid, k_txt),
                                to_windows(v_vid, v_txt), lengths, backend=backend,
                                round_bf16=round_bf16)
  out = constrain(out, ACT_WINDOWS, None, ACT_HEADS, None)
  return _window_outputs(out.reshape(batch, num_windows * seq, heads, head_dim), layout)


def _gather(x_vid, x_txt, gather_idx):
  """(B, N, H, d), (B, L, H, d) -> (B, gather_idx.size, H, d): the buffer rows of every slot."""
  buf = jnp.concatenate([x_vid, x_txt], axis=1)
  return jnp.take(buf, jnp.asarray(gather_idx.reshape(-1)), axis=1, mode="clip")


def _window_outputs(out, layout):
  """Slot outputs (B, slots, H, d) -> video outputs in token order (B, N, H, d) and each text
  token's mean over the windows (B, L, H, d)."""
  batch, _, heads, head_dim = out.shape
  out_vid = constrain(jnp.take(out, jnp.asarray(layout.vid_slot), axis=1, mode="clip"),
                      ACT_BATCH, ACT_TOKENS, ACT_HEADS, None)
  out_txt = jnp.take(out, jnp.asarray(layout.txt_slot.reshape(-1)), axis=1, mode="clip")
  out_txt = out_txt.reshape(batch, layout.txt_slot.shape[0], -1, heads, head_dim)
  out_txt = jnp.mean(out_txt.astype(jnp.float32), axis=1).astype(out.dtype)
  return out_vid, out_txt


WindowKey = tuple[tuple[int, int, int], str]


@dataclasses.dataclass(frozen=True, eq=False)
class AttentionContext:
  """Per-forward static layouts and RoPE angles, shared by all layers with the same windows.

  layouts:  {(window, method): AttentionLayout or PackedLayout (splash)} for the token grid.
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
  if attention_lib.resolve_backend(cfg.attention_backend, cfg.dtype) == "splash":
    layouts = {k: window_packing.packed_layout(grid, k[0], k[1], txt_len, splash.BLOCK)
               for k in keys}
  else:
    layouts = {k: attention_layout(grid, k[0], k[1], txt_len) for k in keys}
  vid_angles, txt_angles = None, None
  if cfg.rope_type is not None:
    freqs = cfg.rope_freqs
    vid_angles = {}
    for key in keys:
      plan = window_plan_lib.window_plan(grid, *key)
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
    """x (B, S, D) -> q, k, v (B, S, H, d) in x's dtype; q/k normalised and rotated; heads over
    "tensor", video tokens over "sequence"."""
    proj = getattr(self.proj_qkv, f"for_{stream}")
    qkv = checkpoint_name(proj(x), "qkv").reshape(*x.shape[:2], 3, self.heads, self.head_dim)
    qkv = constrain(qkv, ACT_BATCH, ACT_TOKENS if stream == "vid" else None, None, ACT_HEADS,
                    None)
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
    out_vid, out_txt = window_attention(
        *qkv_vid, *qkv_txt, ctx.txt_len_b, layout=ctx.layouts[self.window_key],
        backend=ctx.backend, round_bf16=ctx.round_qkv_bf16)
    out_vid = checkpoint_name(out_vid.reshape(*out_vid.shape[:2], -1), "attention")
    out_txt = checkpoint_name(out_txt.reshape(*out_txt.shape[:2], -1), "attention")
    return (checkpoint_name(self.proj_out.for_vid(out_vid), "attn_out"),
            checkpoint_name(self.proj_out.for_txt(out_txt), "attn_out"))
