"""The one attention entry point: padded variable-length sequences (cuDNN flash, XLA or splash)
and packed segments (splash).

Every sequence of the batch is a valid prefix of `lengths[b]` tokens followed by padding; padded
keys are masked out and padded query rows are garbage that callers discard. Non-causal, softmax
scale 1/sqrt(head_dim), like the official `flash_attn_varlen_func` call. The splash backend
(Pallas TPU, `ops/splash.py`) also takes packed sequences of segments (`packed_attention`), which
the DiT uses to pack all windows of a layer without padding each to the largest.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seedvr2_jax.ops import splash

BACKENDS = ("auto", "cudnn", "xla", "splash")


def resolve_backend(backend: str, dtype) -> str:
  """'auto' -> 'splash' on TPU, 'cudnn' on GPU for 16-bit inputs, else 'xla'."""
  if backend not in BACKENDS:
    raise ValueError(f"unknown attention backend {backend!r}; expected one of {BACKENDS}")
  if backend != "auto":
    return backend
  if jax.default_backend() == "tpu":
    return "splash"
  on_gpu = jax.default_backend() == "gpu"
  return "cudnn" if on_gpu and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) else "xla"


def round_to_bf16(x: jnp.ndarray) -> jnp.ndarray:
  """Rounds to bfloat16 precision and keeps x's dtype (a no-op for bf16 inputs)."""
  return x.astype(jnp.bfloat16).astype(x.dtype)


def _rounded(fn, q, k, v, round_bf16: bool):
  """fn(q, k, v), with q, k, v and the output rounded to bfloat16 precision if asked."""
  if not round_bf16:
    return fn(q, k, v)
  return round_to_bf16(fn(*map(round_to_bf16, (q, k, v))))


def attention(q_bshd: jnp.ndarray, k_bshd: jnp.ndarray, v_bshd: jnp.ndarray,
              lengths_b: jnp.ndarray, *, backend: str = "auto",
              round_bf16: bool = False) -> jnp.ndarray:
  """softmax(q k^T / sqrt(d)) v over the valid prefix of each sequence.

  Args:
    q_bshd, k_bshd, v_bshd: (B, S, H, d) queries, keys and values (same dtype).
    lengths_b: (B,) int32 number of valid tokens of each sequence.
    backend: "cudnn" (GPU, bf16/fp16), "xla" (any device/dtype), "splash" (TPU; Pallas
      interpret mode elsewhere) or "auto".
    round_bf16: round q, k, v and the output to bfloat16 precision (keeping their dtype), as the
      official code does around flash attention; a no-op for bf16 inputs.
  Returns:
    (B, S, H, d) in the input dtype; rows past `lengths_b` are unspecified.
  """
  backend = resolve_backend(backend, q_bshd.dtype)
  lengths_b = lengths_b.astype(jnp.int32)
  if backend == "splash":
    return _rounded(lambda q, k, v: _padded_splash(q, k, v, lengths_b), q_bshd, k_bshd, v_bshd,
                    round_bf16)
  return _rounded(lambda q, k, v: jax.nn.dot_product_attention(
      q, k, v, query_seq_lengths=lengths_b, key_value_seq_lengths=lengths_b,
      implementation=backend), q_bshd, k_bshd, v_bshd, round_bf16)


def _padded_splash(q_bshd, k_bshd, v_bshd, lengths_b):
  """Each padded sequence as one segment (id 0) and its padding as another (id 1)."""
  seq = q_bshd.shape[1]
  blocks = -(-seq // splash.BLOCK)
  pad = [(0, 0), (0, blocks * splash.BLOCK - seq), (0, 0), (0, 0)]
  q, k, v = (jnp.pad(x, pad) for x in (q_bshd, k_bshd, v_bshd))
  ids = (jnp.arange(blocks * splash.BLOCK)[None, :] >= lengths_b[:, None]).astype(jnp.int32)
  return splash.segment_attention(q, k, v, ids, (0,) * blocks)[:, :seq]


def packed_attention(q_bshd: jnp.ndarray, k_bshd: jnp.ndarray, v_bshd: jnp.ndarray,
                     segment_ids_bs: jnp.ndarray, block_segments: tuple[int, ...], *,
                     round_bf16: bool = False) -> jnp.ndarray:
  """softmax(q k^T / sqrt(d)) v of every token over the tokens of its segment (splash).

  Args:
    q_bshd, k_bshd, v_bshd: (B, S, H, d), S = len(block_segments) * splash.BLOCK.
    segment_ids_bs: (B, S) int32; a token attends to the tokens with its id in the blocks of
      its own static segment.
    block_segments: static segment of each block of `splash.BLOCK` tokens (non-decreasing).
    round_bf16: as in `attention`.
  Returns:
    (B, S, H, d) in the input dtype.
  """
  return _rounded(lambda q, k, v: splash.segment_attention(q, k, v, segment_ids_bs,
                                                           block_segments),
                  q_bshd, k_bshd, v_bshd, round_bf16)
