"""Generic NNX state <-> official PyTorch state_dict mapping by name, with strict checks.

An NNX parameter path maps to its official key by joining with dots and renaming the Flax leaf:
`kernel` -> `weight` (Linear: transposed from (in, out) to (out, in); Conv3d: from DHWIO to
(out, in, kt, kh, kw)), `scale` -> `weight` (norms); other leaves keep their name.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seedvr2_jax.errors import CheckpointError

_MAX_LISTED = 12
# ours -> official axis order, by rank of a `kernel`.
_KERNEL_TO_OFFICIAL = {2: (1, 0), 5: (4, 3, 0, 1, 2)}


_abstract_lock = threading.Lock()


@functools.lru_cache(maxsize=8)
def _abstract_split(module_type: type, cfg) -> tuple:
  return nnx.split(nnx.eval_shape(lambda: module_type(cfg, nnx.Rngs(0))))


def abstract_split(module_type: type, cfg) -> tuple:
  """(graphdef, abstract state) of `module_type(cfg, rngs)` without allocating parameters,
  built once per (type, config): a 3B DiT takes about a second of Python, and a restore asks
  for it from two threads (its plan and its weight load). The state is the caller's own copy
  (loaders fill it in place)."""
  with _abstract_lock:  # a second caller waits for the first one's build
    graphdef, state = _abstract_split(module_type, cfg)
  return graphdef, jax.tree.map(lambda x: x, state)


def official_key(path: tuple) -> str:
  *head, leaf = (str(p) for p in path)
  return ".".join([*head, "weight" if leaf in ("kernel", "scale") else leaf])


def to_official(path: tuple, value: np.ndarray) -> np.ndarray:
  if str(path[-1]) == "kernel":
    return np.transpose(value, _KERNEL_TO_OFFICIAL[value.ndim])
  return value


def from_official(path: tuple, value: np.ndarray) -> np.ndarray:
  if str(path[-1]) == "kernel":
    return np.transpose(value, np.argsort(_KERNEL_TO_OFFICIAL[value.ndim]))
  return value


def _official_shape(path: tuple, shape: tuple) -> tuple:
  if str(path[-1]) == "kernel":
    return tuple(shape[i] for i in _KERNEL_TO_OFFICIAL[len(shape)])
  return tuple(shape)


def expected_shapes(abstract_state) -> dict[str, tuple]:
  flat = nnx.to_flat_state(abstract_state)
  return {official_key(p): _official_shape(p, tuple(v.shape)) for p, v in zip(flat.paths,
                                                                             flat.leaves)}


def _listing(keys) -> str:
  keys = sorted(keys)
  more = f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
  return ", ".join(keys[:_MAX_LISTED]) + more


def check_keys(state_dict: Mapping, expected: Mapping[str, tuple], what: str) -> None:
  """Raises CheckpointError naming every missing, unexpected or mis-shaped key."""
  present = set(state_dict)
  missing, unexpected = set(expected) - present, present - set(expected)
  shape_of = getattr(state_dict, "shape", lambda k: np.shape(state_dict[k]))
  wrong = [f"{k} {tuple(shape_of(k))} != expected {tuple(expected[k])}"
           for k in sorted(set(expected) & present) if tuple(shape_of(k)) != tuple(expected[k])]
  problems = []
  if missing:
    problems.append(f"missing keys: {_listing(missing)}")
  if unexpected:
    problems.append(f"unexpected keys: {_listing(unexpected)}")
  if wrong:
    problems.append(f"mis-shaped keys: {'; '.join(wrong[:_MAX_LISTED])}")
  if problems:
    raise CheckpointError(f"{what} checkpoint does not match its config: " + " | ".join(problems))


def load_state(state_dict: Mapping, abstract_state, dtype,
               place: Callable[[tuple, np.ndarray], jax.Array] | None = None):
  """Official tensors -> NNX state with the abstract state's structure, cast to `dtype`.

  `place(path, array)` puts each converted host array on devices (default `jnp.asarray`); it is
  called one tensor at a time, so host memory holds about one tensor beyond the file's mmap.
  """
  place = place or (lambda path, x: jnp.asarray(x))
  flat = nnx.to_flat_state(abstract_state)
  leaves = []
  for path, var in zip(flat.paths, flat.leaves):
    value = from_official(path, np.asarray(state_dict[official_key(path)]))
    leaves.append(var.replace(place(path, value.astype(jnp.dtype(dtype)))))
  return nnx.from_flat_state(list(zip(flat.paths, leaves)))


class _Exported:
  """An official-layout view of one parameter, fetched to the host only when read."""

  def __init__(self, path: tuple, value: jax.Array):
    self._path, self._value = path, value
    self.shape = _official_shape(path, tuple(value.shape))
    self.dtype = np.dtype(value.dtype)

  def __array__(self, dtype=None, copy=None):
    out = to_official(self._path, np.asarray(jax.device_get(self._value)))
    return out if dtype is None else out.astype(dtype)


def export_state(state) -> dict[str, _Exported]:
  """NNX state -> {official key: lazily fetched array}; `np.asarray(v)` materialises one."""
  flat = nnx.to_flat_state(state)
  return {official_key(p): _Exported(p, v[...]) for p, v in zip(flat.paths, flat.leaves)}
