"""Official NaDiT state_dict <-> NNX state of `NaDiT`, by name map plus transposes.

The NNX tree mirrors the official module tree, so a parameter path maps to its official key by
joining with dots and renaming Flax leaves: `kernel` -> `weight` (transposed, Linear (out, in)),
`scale` -> `weight` (RMS norms). RoPE frequency buffers (`blocks.N.attn.rope.rope.freqs`) have no
parameter here: they are recomputed from the config and checked against the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from seedvr2_jax.errors import CheckpointError
from seedvr2_jax.models.dit.config import NaDiTConfig
from seedvr2_jax.models.dit.nadit import NaDiT

_MAX_LISTED = 12


def abstract_model(cfg: NaDiTConfig):
  """(graphdef, abstract state) of a NaDiT without allocating parameters."""
  return nnx.split(nnx.eval_shape(lambda: NaDiT(cfg, nnx.Rngs(0))))


def official_key(path: tuple) -> tuple[str, bool]:
  """NNX param path -> (official key, whether the tensor is transposed)."""
  *head, leaf = (str(p) for p in path)
  if leaf == "kernel":
    return ".".join([*head, "weight"]), True
  if leaf == "scale":
    return ".".join([*head, "weight"]), False
  return ".".join([*head, leaf]), False


def rope_buffer_keys(cfg: NaDiTConfig) -> list[str]:
  if cfg.rope_type is None:
    return []
  return [f"blocks.{i}.attn.rope.rope.freqs" for i in range(cfg.num_layers)]


def _flat_params(abstract_state) -> Iterator[tuple[tuple, object]]:
  flat = nnx.to_flat_state(abstract_state)
  return zip(flat.paths, flat.leaves)


def _listing(keys) -> str:
  keys = sorted(keys)
  more = f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
  return ", ".join(keys[:_MAX_LISTED]) + more


def check_keys(state_dict: Mapping, cfg: NaDiTConfig, abstract_state) -> None:
  """Raises CheckpointError naming every missing, unexpected or mis-shaped key."""
  expected = {}
  for path, var in _flat_params(abstract_state):
    key, transposed = official_key(path)
    shape = tuple(var.shape)
    expected[key] = shape[::-1] if transposed else shape
  for key in rope_buffer_keys(cfg):
    expected[key] = (len(cfg.rope_freqs),)
  present = set(state_dict)
  missing, unexpected = set(expected) - present, present - set(expected)
  shape_of = getattr(state_dict, "shape", lambda k: np.shape(state_dict[k]))
  wrong = [f"{k} {tuple(shape_of(k))} != expected {expected[k]}"
           for k in sorted(set(expected) & present) if tuple(shape_of(k)) != expected[k]]
  problems = []
  if missing:
    problems.append(f"missing keys: {_listing(missing)}")
  if unexpected:
    problems.append(f"unexpected keys: {_listing(unexpected)}")
  if wrong:
    problems.append(f"mis-shaped keys: {'; '.join(wrong[:_MAX_LISTED])}")
  if problems:
    raise CheckpointError(f"DiT checkpoint does not match the {cfg.variant} config: "
                          + " | ".join(problems))


def check_rope_buffers(state_dict: Mapping, cfg: NaDiTConfig) -> None:
  """The stored RoPE frequencies must equal the ones the config implies (up to the rounding of
  the stored dtype, e.g. bf16 checkpoints)."""
  for key in rope_buffer_keys(cfg):
    stored = np.asarray(state_dict[key])
    buf = stored.astype(np.float32)
    rtol = max(1e-6, float(ml_dtypes.finfo(stored.dtype).eps))
    if not np.allclose(buf, cfg.rope_freqs, rtol=rtol, atol=0):
      fmt = lambda a: "[" + ", ".join(f"{v:.6g}" for v in a) + "]"
      raise CheckpointError(f"RoPE buffer {key} = {fmt(buf)} differs from the {cfg.rope_type} "
                            f"frequencies of the config {fmt(cfg.rope_freqs)}")


def load_state(state_dict: Mapping, cfg: NaDiTConfig,
               place: Callable[[tuple, np.ndarray], jax.Array] | None = None):
  """Official state_dict -> (graphdef, NNX state) in cfg.param_dtype, strictly checked.

  `place(path, array)` puts each converted host array on devices (default: `jnp.asarray`); it
  is called one tensor at a time, so host memory holds about one tensor beyond the file's mmap.
  """
  graphdef, abstract_state = abstract_model(cfg)
  check_keys(state_dict, cfg, abstract_state)
  check_rope_buffers(state_dict, cfg)
  dtype = jnp.dtype(cfg.param_dtype)
  place = place or (lambda path, x: jnp.asarray(x))
  flat = nnx.to_flat_state(abstract_state)
  leaves = []
  for path, var in zip(flat.paths, flat.leaves):
    key, transposed = official_key(path)
    value = np.asarray(state_dict[key])
    value = (value.T if transposed else value).astype(dtype)
    leaves.append(var.replace(place(path, value)))
  return graphdef, nnx.from_flat_state(list(zip(flat.paths, leaves)))


def load_model(state_dict: Mapping, cfg: NaDiTConfig) -> NaDiT:
  """A NaDiT with the weights of an official state_dict."""
  return nnx.merge(*load_state(state_dict, cfg))


def export_state(state, cfg: NaDiTConfig) -> Iterator[tuple[str, np.ndarray]]:
  """NNX state -> (official key, host array) pairs, RoPE buffers included."""
  flat = nnx.to_flat_state(state)
  for path, var in zip(flat.paths, flat.leaves):
    key, transposed = official_key(path)
    value = np.asarray(jax.device_get(var[...]))
    yield key, (value.T if transposed else value)
  for key in rope_buffer_keys(cfg):
    yield key, cfg.rope_freqs
