"""Official VAE state_dict (`ema_vae.pth`) <-> NNX state of `VideoAutoencoder`.

Older diffusers checkpoints name the mid-block attention `query/key/value/proj_attn`; they are
read as `to_q/to_k/to_v/to_out.0` (the official loader renames them the same way).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
from flax import nnx

from seedvr2_jax.convert import nnx_map
from seedvr2_jax.errors import CheckpointError
from seedvr2_jax.models.vae.autoencoder import VideoAutoencoder
from seedvr2_jax.models.vae.config import VAEConfig

_DEPRECATED = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_DEPRECATED_RE = re.compile(r"^(.*\.attentions\.\d+\.)(query|key|value|proj_attn)(\.\w+)$")


class _Renamed(Mapping):
  """A state_dict view with deprecated attention names replaced by current ones."""

  def __init__(self, state_dict: Mapping):
    self._sd, self._names = state_dict, {}
    for key in state_dict:
      match = _DEPRECATED_RE.match(key)
      new = f"{match[1]}{_DEPRECATED[match[2]]}{match[3]}" if match else key
      if new in self._names:
        raise CheckpointError(f"VAE checkpoint holds both {self._names[new]} and {key}")
      self._names[new] = key

  def __getitem__(self, key):
    return self._sd[self._names[key]]

  def shape(self, key):
    shape_of = getattr(self._sd, "shape", lambda k: np.shape(self._sd[k]))
    return shape_of(self._names[key])

  def __iter__(self):
    return iter(self._names)

  def __len__(self):
    return len(self._names)


def abstract_model(cfg: VAEConfig):
  """(graphdef, abstract state) of a VideoAutoencoder without allocating parameters."""
  return nnx_map.abstract_split(VideoAutoencoder, cfg)


def load_state(state_dict: Mapping, cfg: VAEConfig, place=None):
  """Official VAE state_dict -> (graphdef, NNX state) in cfg.param_dtype, strictly checked."""
  graphdef, abstract_state = abstract_model(cfg)
  renamed = _Renamed(state_dict)
  nnx_map.check_keys(renamed, nnx_map.expected_shapes(abstract_state), "VAE")
  return graphdef, nnx_map.load_state(renamed, abstract_state, cfg.param_dtype, place)


def load_model(state_dict: Mapping, cfg: VAEConfig) -> VideoAutoencoder:
  return nnx.merge(*load_state(state_dict, cfg))

