"""Device meshes for training and inference: axes ("data", "fsdp", "sequence", "tensor").

Sizes come from the config; one size may be -1 (fills the remaining devices). Across slices or
nodes (`dcn` sizes), a hybrid mesh keeps the fast-interconnect axes inside a slice/node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import numpy as np
from jax.experimental import mesh_utils

from seedvr2_jax.errors import ConfigError

AXES = ("data", "fsdp", "sequence", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch is split over both (FSDP is data parallel too)


def axis_sizes(sizes: Mapping[str, int], devices: int) -> tuple[int, ...]:
  """Sizes for AXES from a mapping (missing axes = 1, at most one -1 filled)."""
  unknown = sorted(set(sizes) - set(AXES))
  if unknown:
    raise ConfigError(f"unknown mesh axis {', '.join(unknown)}; expected some of {AXES}")
  shape = [int(sizes.get(axis, 1)) for axis in AXES]
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ConfigError(f"mesh sizes {dict(zip(AXES, shape))}: use positive sizes and at most one "
                      f"-1")
  fixed = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if devices % fixed:
      raise ConfigError(f"mesh sizes {dict(zip(AXES, shape))} do not divide {devices} devices")
    shape[shape.index(-1)] = devices // fixed
  if math.prod(shape) != devices:
    raise ConfigError(f"mesh {dict(zip(AXES, shape))} needs {math.prod(shape)} devices, "
                      f"{devices} available")
  return tuple(shape)


def make_mesh(sizes: Mapping[str, int], dcn: Mapping[str, int] | None = None,
              devices=None) -> jax.sharding.Mesh:
  """A mesh over `devices` (default: all). `dcn`: per-axis sizes across slices/nodes (their
  product = number of slices); `sizes` then describe one slice and -1 fills within it."""
  devices = jax.devices() if devices is None else devices
  auto = (jax.sharding.AxisType.Auto,) * len(AXES)
  if dcn:
    dcn_shape = axis_sizes(dcn, math.prod(int(v) for v in dcn.values()))
    ici_shape = axis_sizes(sizes, len(devices) // math.prod(dcn_shape))
    array = mesh_utils.create_hybrid_device_mesh(ici_shape, dcn_shape, devices,
                                                 allow_split_physical_axes=True)
  else:
    shape = axis_sizes(sizes, len(devices))
    # Split physical axes where needed: data=8 x fsdp=8 on a 4x4x4 TPU slice.
    array = (mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
             if devices[0].platform != "cpu" else np.asarray(devices).reshape(shape))
  return jax.sharding.Mesh(array, AXES, axis_types=auto)


def traced_with_mesh(fn, mesh: jax.sharding.Mesh | None):
  """`fn` whose trace sees `mesh` as the context mesh (kernels that XLA cannot partition, such
  as splash attention, run in a shard_map over it); `fn` itself without a mesh."""
  if mesh is None:
    return fn

  def traced(*args, **kwargs):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args, **kwargs)
  return traced
