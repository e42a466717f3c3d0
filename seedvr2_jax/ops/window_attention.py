"""Swin-MM window attention: every window of a sample attends over [its video tokens, the text].

Windows become a batch: window i is laid out as [video tokens of i, all L text tokens, padding],
so its valid tokens form a prefix of length len_i + txt_len and one padded-length attention call
covers all windows (no Python loop). Video outputs are gathered back to token order; each text
token's output is the mean over the windows of its sample (official `unconcat_coalesce`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np

from seedvr2_jax.ops import attention as attention_lib
from seedvr2_jax.ops import window_plan as window_plan_lib

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
    layout: `attention_layout(...)` for the samples' token grid and this layer's windows.
    backend, round_bf16: see `attention.attention`.
  Returns:
    (out_vid (B, N, H, d), out_txt (B, L, H, d)); text rows past txt_len_b are unspecified.
  """
  batch, _, heads, head_dim = q_vid.shape
  num_windows, seq = layout.gather_idx.shape
  flat_idx = jnp.asarray(layout.gather_idx.reshape(-1))

  def to_windows(x_vid, x_txt):
    buf = jnp.concatenate([x_vid, x_txt], axis=1)
    windows = jnp.take(buf, flat_idx, axis=1, mode="clip")
    return windows.reshape(batch * num_windows, seq, heads, head_dim)

  lengths = (jnp.asarray(layout.vid_len)[None, :] + txt_len_b[:, None]).reshape(-1)
  out = attention_lib.attention(to_windows(q_vid, q_txt), to_windows(k_vid, k_txt),
                                to_windows(v_vid, v_txt), lengths, backend=backend,
                                round_bf16=round_bf16)
  out = out.reshape(batch, num_windows * seq, heads, head_dim)
  out_vid = jnp.take(out, jnp.asarray(layout.vid_slot), axis=1, mode="clip")
  out_txt = jnp.take(out, jnp.asarray(layout.txt_slot.reshape(-1)), axis=1,
                     mode="clip")
  out_txt = out_txt.reshape(batch, num_windows, -1, heads, head_dim)
  out_txt = jnp.mean(out_txt.astype(jnp.float32), axis=1).astype(out.dtype)
  return out_vid, out_txt
