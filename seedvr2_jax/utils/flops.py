"""Matmul/conv FLOPs of a JAX function, counted from its jaxpr (no compilation, no devices).

Counts 2 * MACs of every `dot_general` and `conv_general_dilated`, entering sub-jaxprs (jit,
remat, custom_vjp) and multiplying loop bodies by their trip count (`scan`, `lax.map`).
Element-wise work is not counted.
"""

from __future__ import annotations

import math

import jax
from jax.extend import core as jex_core


def _dot_flops(eqn) -> int:
  lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
  (lhs_contract, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
  contract = math.prod(lhs[d] for d in lhs_contract)
  out = math.prod(eqn.outvars[0].aval.shape)
  return 2 * out * contract


def _conv_flops(eqn) -> int:
  rhs = eqn.invars[1].aval.shape
  spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial) positions
  per_output = math.prod(rhs[d] for d in spec[1:])  # in * kernel volume
  groups = eqn.params["feature_group_count"]
  return 2 * math.prod(eqn.outvars[0].aval.shape) * per_output // max(groups, 1) * groups


def _jaxpr_flops(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
    elif name == "conv_general_dilated":
      total += _conv_flops(eqn)
    repeat = eqn.params.get("length", 1) if name == "scan" else 1
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        if isinstance(sub, jex_core.ClosedJaxpr):
          total += repeat * _jaxpr_flops(sub.jaxpr)
        elif isinstance(sub, jex_core.Jaxpr):
          total += repeat * _jaxpr_flops(sub)
  return total


def count_flops(fn, *args) -> int:
  """Matmul + conv FLOPs of fn(*args); args may be jax.ShapeDtypeStruct."""
  return _jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)
