"""Logical axis names -> mesh shardings (rules from the config), for parameters, activations
and batches.

Parameters carry logical names ("embed", "heads", "mlp", "modulation"; see
models/dit/layers.py); activations inside the models are constrained by theirs ("act_batch",
"act_tokens", ...; `constrain`) while a step traces under `activation_sharding(mesh, rules)`.
Rules map each name to a mesh axis, a tuple of mesh axes (split over their product) or None
(replicated). A dimension that its mesh axes do not divide keeps the leading axes that do; a mesh
axis already used by another dimension is skipped; so any config is valid on any mesh (it may
just shard less).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Mapping, Sequence

import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from seedvr2_jax.errors import ConfigError
from seedvr2_jax.parallel.mesh import AXES, BATCH_AXES

# Logical names of activation axes: samples, video tokens (sequence parallel), the model width
# of the residual streams, attention heads, the MLP hidden layer, and attention windows (the
# batch of windows x samples that window attention runs on).
ACT_BATCH, ACT_TOKENS, ACT_EMBED = "act_batch", "act_tokens", "act_embed"
ACT_HEADS, ACT_MLP, ACT_WINDOWS = "act_heads", "act_mlp", "act_windows"

# Parameters: FSDP over the model width; heads / MLP hidden over "tensor". Activations: samples
# over the batch axes, video tokens over "sequence", the width replicated (the residual streams
# are never split over fsdp: FSDP gathers weights, not activations), heads / MLP hidden over
# "tensor", windows over the batch axes and "sequence".
DEFAULT_RULES = (("embed", "fsdp"), ("heads", "tensor"), ("mlp", "tensor"),
                 ("modulation", "tensor"),
                 (ACT_BATCH, BATCH_AXES), (ACT_TOKENS, "sequence"), (ACT_EMBED, None),
                 (ACT_HEADS, "tensor"), (ACT_MLP, "tensor"),
                 (ACT_WINDOWS, (*BATCH_AXES, "sequence")))

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]


def _axes(value) -> tuple[str, ...]:
  return () if value is None else (value,) if isinstance(value, str) else tuple(value)


def _check_rules(rules: Rules) -> dict:
  table = dict(rules)
  bad = sorted({a for v in table.values() for a in _axes(v) if a not in AXES})
  if bad:
    raise ConfigError(f"sharding rules map to unknown mesh axes {bad}; expected {AXES}")
  return table


def mesh_spec(logical: PartitionSpec, shape: Sequence[int], rules: Mapping,
              mesh: jax.sharding.Mesh, fallback=None) -> PartitionSpec:
  """A logical PartitionSpec -> a mesh PartitionSpec for `shape`. A dimension whose rule is None
  is replicated; one without a logical name or rule, or whose mesh axes cannot split it, gets
  `fallback` (None: replicated)."""
  used, out = set(), []
  for dim, name in zip(shape, tuple(logical) + (None,) * (len(shape) - len(logical))):
    if name is not None and name in rules and rules[name] is None:
      out.append(None)
      continue
    axes = [a for a in _axes(rules.get(name)) if a not in used and mesh.shape[a] > 1]
    while axes and dim % math.prod(mesh.shape[a] for a in axes):
      axes.pop()
    used.update(axes)
    out.append(fallback if not axes else axes[0] if len(axes) == 1 else tuple(axes))
  return PartitionSpec(*out)


def state_shardings(abstract_state: nnx.State, mesh: jax.sharding.Mesh,
                    rules: Rules = DEFAULT_RULES):
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


_ACTIVE = contextvars.ContextVar("activation_sharding", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: jax.sharding.Mesh, rules: Rules = DEFAULT_RULES):
  """While active (a step's trace), `constrain` places activations on `mesh` by `rules`."""
  token = _ACTIVE.set((mesh, _check_rules(rules)) if mesh.size > 1 else None)
  try:
    yield
  finally:
    _ACTIVE.reset(token)


def constrain(x: jax.Array, *names: str | None) -> jax.Array:
  """`x` constrained to the sharding of its logical axis `names` (one per dimension; None
  leaves a dimension to the compiler) under the active `activation_sharding`; `x` unchanged
  without one (or on one device)."""
  active = _ACTIVE.get()
  if active is None:
    return x
  mesh, table = active
  spec = mesh_spec(PartitionSpec(*names), x.shape, table, mesh, PartitionSpec.UNCONSTRAINED)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
