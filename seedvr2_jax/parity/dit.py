"""DiT parity: the fixture's official weights through the converter, official outputs compared.

Inputs are packed like the official NaDiT (`vid` rows = concatenated latent grids, `vid_shape`,
`txt`, `txt_shape`); each sample runs as its own batch-1 call, as the fixtures' `out` does.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from seedvr2_jax.convert import dit as dit_convert
from seedvr2_jax.convert.state_dict import open_state_dict
from seedvr2_jax.models.dit import config as dit_config
from seedvr2_jax.parity.common import Check, Fixture, max_rel_err

# (reference array, round q/k/v to bf16, tolerance, timestep array); missing arrays are skipped.
_CHECKS = (("out", False, 1e-4, "timestep"), ("out_bf16qkv", True, 5e-3, "timestep"),
           ("out_timestep_extra", False, 1e-4, "timestep_extra"))
REQUIRED = {"dit3b": ("dit3b.safetensors", "dit3b_io.npz"),
            "dit7b": ("dit7b.safetensors", "dit3b_io.npz", "dit7b_io.npz")}


def unpack(packed: np.ndarray, shapes: np.ndarray) -> list[np.ndarray]:
  """(sum_b prod(shape_b), C) -> per-sample (*shape_b, C) arrays."""
  sizes = np.prod(shapes, axis=1)
  parts = np.split(packed, np.cumsum(sizes)[:-1])
  return [p.reshape(*s, -1) for p, s in zip(parts, shapes)]


def predict_packed(model_fn, io: dict, timestep: np.ndarray) -> np.ndarray:
  """Runs each packed sample as a batch of one; returns the packed (rows, C_out) output."""
  vids = unpack(io["vid"], io["vid_shape"])
  txts = unpack(io["txt"], io["txt_shape"])
  outs = []
  for i, (vid, txt) in enumerate(zip(vids, txts)):
    out = np.asarray(model_fn(vid[None], txt[None], timestep[i:i + 1]))
    outs.append(out.reshape(-1, out.shape[-1]))
  return np.concatenate(outs)


class _Forward:
  """Jitted float32 forward of a (graphdef, state) pair."""

  def __init__(self, graphdef, state):
    self._fn = jax.jit(lambda s, v, t, ts: nnx.merge(graphdef, s)(v, t, ts))
    self._state = state

  def __call__(self, vid, txt, timestep):
    with jax.default_matmul_precision("highest"):
      return self._fn(self._state, vid, txt, timestep)


def run(fixture: Fixture, component: str) -> list[Check]:
  variant = {"dit3b": "3b", "dit7b": "7b"}[component]
  io = fixture.arrays("dit3b_io.npz")
  refs = io if component == "dit3b" else fixture.arrays("dit7b_io.npz")
  official = fixture.config[component]["config"]
  cfg = dit_config.from_official(official, variant)
  _, state = dit_convert.load_state(open_state_dict(fixture.file(f"{component}.safetensors")), cfg)
  checks = []
  for ref_key, round_bf16, tol, timestep_key in _CHECKS:
    if ref_key not in refs or timestep_key not in io:
      continue
    graphdef, _ = dit_convert.abstract_model(
        dit_config.from_official(official, variant, round_qkv_bf16=round_bf16))
    forward = _Forward(graphdef, state)
    out = predict_packed(forward, io, io[timestep_key])
    checks.append(Check(ref_key, max_rel_err(out, refs[ref_key]), tol))
  return checks
