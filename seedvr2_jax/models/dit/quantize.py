"""Weight-only int8 / fp8 (e4m3) kernels of the DiT blocks, dequantised inside the program.

What is quantised: the kernel of every Linear inside the transformer blocks (the q/k/v and
output projections of attention and the MLPs): 98.2% of the 3B's parameters and 99.0% of the
7B's. What stays in the native dtype: the patch and text embeddings, the time embedding (it
makes the modulation of every block, so its error would reach all of them), the output head,
biases, RMS norm weights and the ada modulation tables: vectors and small matrices, 1.8% and
1.0% of the weights, run once per call rather than once per block.

Scheme: per output channel, symmetric, float32 scales. For a kernel w (in, out),
scale_o = max_i |w_io| / QMAX and q = round(w / scale) in int8 (QMAX 127, |w - q scale| <=
scale / 2) or q = float8_e4m3fn(w / scale) (QMAX 448, 3 mantissa bits). `quantize_model` runs
after the weights are loaded (converter checkpoints, trained states); the result is a NaDiT
whose block kernels hold a `QuantizedArray` (q and scale, both pytree leaves), so nnx.split /
merge, jit arguments, the scanned blocks (stacked per leaf) and host streaming
(`streaming.py`) carry it unchanged. `NaDiT._apply` dequantises a block's state to the compute
dtype right before the block runs: activations stay in bf16 / float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
from flax import nnx, struct

from seedvr2_jax.errors import ConfigError

# Storage dtype and largest magnitude of each quantised format.
FORMATS = {"int8": (jnp.int8, 127.0),
           "fp8": (jnp.float8_e4m3fn, float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max))}


@struct.dataclass
class QuantizedArray:
  """A kernel (..., in, out) as q (int8 or float8_e4m3fn, same shape) and float32 scales
  (..., 1, out); leading axes are the repeats of stacked (scanned) blocks."""

  q: jax.Array
  scale: jax.Array

  def dequantize(self, dtype) -> jax.Array:
    """q * scale in float32, then cast to `dtype`."""
    return (self.q.astype(jnp.float32) * self.scale).astype(dtype)


def is_quantized(x) -> bool:
  return isinstance(x, QuantizedArray)


def quantize(w: jax.Array, fmt: str) -> QuantizedArray:
  """Kernel w (..., in, out) -> per-output-channel symmetric `fmt` ("int8" or "fp8")."""
  if fmt not in FORMATS:
    raise ConfigError(f"unknown DiT weight format {fmt!r}; expected one of {tuple(FORMATS)}")
  dtype, qmax = FORMATS[fmt]
  w = jnp.asarray(w, jnp.float32)
  amax = jnp.max(jnp.abs(w), axis=-2, keepdims=True)
  scale = jnp.where(amax > 0, amax / qmax, 1.0)
  scaled = w / scale
  q = jnp.clip(jnp.round(scaled), -qmax, qmax) if fmt == "int8" else scaled
  return QuantizedArray(q.astype(dtype), scale)


def dequantize(state: nnx.State, dtype) -> nnx.State:
  """`state` with every QuantizedArray replaced by its dequantised kernel in `dtype`."""
  return jax.tree.map(lambda x: x.dequantize(dtype) if is_quantized(x) else x, state,
                      is_leaf=is_quantized)


def _is_block_kernel(path) -> bool:
  keys = [getattr(k, "key", None) for k in path]
  return keys[0] == "blocks" and "kernel" in keys


def quantize_model(dit, fmt: str):
  """A NaDiT whose block kernels are stored in `fmt`; "native" returns `dit` itself."""
  if fmt == "native":
    return dit
  graphdef, state = nnx.split(dit)
  run = jax.jit(quantize, static_argnums=1)
  state = jax.tree_util.tree_map_with_path(
      lambda path, x: run(x, fmt) if _is_block_kernel(path) else x, state)
  return nnx.merge(graphdef, state)
