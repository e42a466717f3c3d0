"""Official NaDiT state_dict <-> NNX state of `NaDiT` (name map in `nnx_map`).

RoPE frequency buffers (`blocks.N.attn.rope.rope.freqs`) have no parameter here: the model
recomputes them from the config, the converter checks the file's against them and keeps the file's
values (`read_rope_buffers`) so that export writes back exactly what was read.
"""

from __future__ import annotations

from collections.abc import Mapping

import ml_dtypes
import numpy as np
from flax import nnx

from seedvr2_jax.convert import nnx_map
from seedvr2_jax.errors import CheckpointError
from seedvr2_jax.models.dit.config import NaDiTConfig
from seedvr2_jax.models.dit.nadit import NaDiT


def abstract_model(cfg: NaDiTConfig):
  """(graphdef, abstract state) of a NaDiT without allocating parameters."""
  return nnx_map.abstract_split(NaDiT, cfg)


def rope_buffer_keys(cfg: NaDiTConfig) -> list[str]:
  if cfg.rope_type is None:
    return []
  return [f"blocks.{i}.attn.rope.rope.freqs" for i in range(cfg.num_layers)]


def expected_shapes(cfg: NaDiTConfig, abstract_state) -> dict[str, tuple]:
  shapes = nnx_map.expected_shapes(abstract_state)
  shapes.update({k: (len(cfg.rope_freqs),) for k in rope_buffer_keys(cfg)})
  return shapes


def check_rope_buffers(state_dict: Mapping, cfg: NaDiTConfig) -> None:
  """The stored RoPE frequencies must equal the ones the config implies.

  Relative tolerance: the stored dtype's epsilon, at least 1e-6 (8 float32 ulp). float32 `pow`
  is not correctly rounded in every library (torch's vectorised CPU `pow` and numpy's differ by
  an ulp on some machines), so an exact comparison would depend on the platform; a wrong formula
  (another theta, dimension or kind) moves the frequencies by orders of magnitude more.
  """
  for key in rope_buffer_keys(cfg):
    stored = np.asarray(state_dict[key])
    buf = stored.astype(np.float32)
    rtol = max(1e-6, float(ml_dtypes.finfo(stored.dtype).eps))
    if not np.allclose(buf, cfg.rope_freqs, rtol=rtol, atol=0):
      fmt = lambda a: "[" + ", ".join(f"{v:.6g}" for v in a) + "]"
      raise CheckpointError(f"RoPE buffer {key} = {fmt(buf)} differs from the {cfg.rope_type} "
                            f"frequencies of the config {fmt(cfg.rope_freqs)}")


def read_rope_buffers(state_dict: Mapping, cfg: NaDiTConfig) -> np.ndarray | None:
  """(num_layers, F) RoPE buffers as stored (dtype kept; None for a model without RoPE)."""
  keys = rope_buffer_keys(cfg)
  return np.stack([np.asarray(state_dict[k]) for k in keys]) if keys else None


def load_state(state_dict: Mapping, cfg: NaDiTConfig, place=None):
  """Official state_dict -> (graphdef, NNX state) in cfg.param_dtype, strictly checked."""
  graphdef, abstract_state = abstract_model(cfg)
  nnx_map.check_keys(state_dict, expected_shapes(cfg, abstract_state), f"DiT ({cfg.variant})")
  check_rope_buffers(state_dict, cfg)
  return graphdef, nnx_map.load_state(state_dict, abstract_state, cfg.param_dtype, place)


def load_model(state_dict: Mapping, cfg: NaDiTConfig) -> NaDiT:
  """A NaDiT with the weights of an official state_dict."""
  return nnx.merge(*load_state(state_dict, cfg))


def export_state(state, cfg: NaDiTConfig, rope_buffers: np.ndarray | None = None) -> dict:
  """NNX state -> {official key: array (lazily fetched)}, RoPE buffers included.

  `rope_buffers` (num_layers, F): the buffers of the file the state was converted from
  (`read_rope_buffers`), written back unchanged; without them (a model trained here) each block
  gets the frequencies the model computes.
  """
  tensors = nnx_map.export_state(state)
  keys = rope_buffer_keys(cfg)
  rows = rope_buffers if rope_buffers is not None else [cfg.rope_freqs] * len(keys)
  tensors.update(dict(zip(keys, rows, strict=True)))
  return tensors
