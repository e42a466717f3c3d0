"""The one attention entry point: padded variable-length sequences, cuDNN flash or plain XLA.

Every sequence of the batch is a valid prefix of `lengths[b]` tokens followed by padding; padded
keys are masked out and padded query rows are garbage that callers discard. Non-causal, softmax
scale 1/sqrt(head_dim), like the official `flash_attn_varlen_func` call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BACKENDS = ("auto", "cudnn", "xla")


def resolve_backend(backend: str, dtype) -> str:
  """'auto' -> 'cudnn' on GPU for 16-bit inputs, else 'xla'."""
  if backend not in BACKENDS:
    raise ValueError(f"unknown attention backend {backend!r}; expected one of {BACKENDS}")
  if backend != "auto":
    return backend
  on_gpu = jax.default_backend() == "gpu"
  return "cudnn" if on_gpu and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) else "xla"


def round_to_bf16(x: jnp.ndarray) -> jnp.ndarray:
  """Rounds to bfloat16 precision and keeps x's dtype (a no-op for bf16 inputs)."""
  return x.astype(jnp.bfloat16).astype(x.dtype)


def attention(q_bshd: jnp.ndarray, k_bshd: jnp.ndarray, v_bshd: jnp.ndarray,
              lengths_b: jnp.ndarray, *, backend: str = "auto",
              round_bf16: bool = False) -> jnp.ndarray:
  """softmax(q k^T / sqrt(d)) v over the valid prefix of each sequence.

  Args:
    q_bshd, k_bshd, v_bshd: (B, S, H, d) queries, keys and values (same dtype).
    lengths_b: (B,) int32 number of valid tokens of each sequence.
    backend: "cudnn" (GPU, bf16/fp16), "xla" (any device/dtype) or "auto".
    round_bf16: round q, k, v and the output to bfloat16 precision (keeping their dtype), as the
      official code does around flash attention; a no-op for bf16 inputs.
  Returns:
    (B, S, H, d) in the input dtype; rows past `lengths_b` are unspecified.
  """
  backend = resolve_backend(backend, q_bshd.dtype)
  lengths_b = lengths_b.astype(jnp.int32)
  if round_bf16:
    q_bshd, k_bshd, v_bshd = map(round_to_bf16, (q_bshd, k_bshd, v_bshd))
  out = jax.nn.dot_product_attention(
      q_bshd, k_bshd, v_bshd, query_seq_lengths=lengths_b, key_value_seq_lengths=lengths_b,
      implementation=backend)
  return round_to_bf16(out) if round_bf16 else out
