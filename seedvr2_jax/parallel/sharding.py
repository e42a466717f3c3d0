"""Logical axis names -> mesh shardings (rules from the config), for parameters and batches.

Parameters carry logical names ("embed", "heads", "mlp", "modulation"; see
models/dit/layers.py). Rules map each name to a mesh axis (or None). A dimension that its mesh
axis does not divide, or a mesh axis already used by another dimension, stays replicated, so
any config is valid on any mesh (it may just shard less).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from seedvr2_jax.errors import ConfigError
from seedvr2_jax.parallel.mesh import AXES, BATCH_AXES

# FSDP over the model width; heads / MLP hidden over "tensor".
DEFAULT_RULES = (("embed", "fsdp"), ("heads", "tensor"), ("mlp", "tensor"),
                 ("modulation", "tensor"))


def _check_rules(rules: Sequence[tuple[str, str | None]]) -> dict:
  table = dict(rules)
  bad = sorted(str(v) for v in table.values() if v is not None and v not in AXES)
  if bad:
    raise ConfigError(f"sharding rules map to unknown mesh axes {bad}; expected {AXES}")
  return table


def mesh_spec(logical: PartitionSpec, shape: Sequence[int], rules: Mapping[str, str | None],
              mesh: jax.sharding.Mesh) -> PartitionSpec:
  """A parameter's logical PartitionSpec -> a mesh PartitionSpec for `shape`."""
  used, out = set(), []
  for dim, name in zip(shape, tuple(logical) + (None,) * (len(shape) - len(logical))):
    axis = rules.get(name) if name is not None else None
    if axis is None or axis in used or mesh.shape[axis] == 1 or dim % mesh.shape[axis]:
      out.append(None)
    else:
      used.add(axis)
      out.append(axis)
  return PartitionSpec(*out)


def state_shardings(abstract_state: nnx.State, mesh: jax.sharding.Mesh,
                    rules: Sequence[tuple[str, str | None]] = DEFAULT_RULES):
  """NamedShardings for every leaf of an nnx State (abstract or concrete)."""
  table = _check_rules(rules)
  logical = nnx.get_partition_spec(abstract_state)
  return jax.tree.map(
      lambda spec, leaf: NamedSharding(mesh, mesh_spec(spec, leaf.shape, table, mesh)),
      logical, abstract_state, is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_spec(ndim: int, sequence_axis: int | None = None) -> PartitionSpec:
  """Leading axis over the batch axes; optionally one more axis over "sequence"."""
  spec = [BATCH_AXES] + [None] * (ndim - 1)
  if sequence_axis is not None:
    spec[sequence_axis] = "sequence"
  return PartitionSpec(*spec)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())
