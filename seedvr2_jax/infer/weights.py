"""Where the weights of each restore stage live between and during its programs.

`offload` "none": every stage's weights stay on the device. "stages": they are kept in pinned
host memory and copied to the device for their own stage only; the caller frees the copy
(`release`) once the stage's programs have run. "blocks": as "stages", except the leaves given
in host memory: the DiT's scanned blocks after `models/dit/streaming.py: stream_blocks`, which
its program moves to the device itself, one scan step at a time; they stay in host memory, in
`on_device` and `abstract` too. States may be abstract (`jax.ShapeDtypeStruct` leaves): then
nothing is placed, and `on_device` gives the abstract device arguments (memory estimates of
models that are not loaded). Quantised DiT kernels (`RestoreOptions.dit_weights`, applied by
`restore.load_session`) are placed like any other weights (their q and scale are leaves).
"""

from __future__ import annotations

import jax

from seedvr2_jax.errors import ConfigError
from seedvr2_jax.infer.options import OFFLOAD_MODES
from seedvr2_jax.models.dit.streaming import HOST_MEMORY


def _place(tree, shardings):
  """`tree` on `shardings` (one per leaf): arrays copied there, abstract leaves given it."""
  def place(x, sharding):
    if isinstance(x, jax.ShapeDtypeStruct):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
    return jax.device_put(x, sharding)
  return jax.tree.map(place, tree, shardings)


def nbytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def device_sharding(mesh: jax.sharding.Mesh | None = None) -> jax.sharding.Sharding:
  """Weights on the first device (mesh None), or replicated over `mesh`'s devices."""
  if mesh is None:
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def host_sharding(mesh: jax.sharding.Mesh | None = None) -> jax.sharding.Sharding:
  """`device_sharding(mesh)` in pinned host memory."""
  return device_sharding(mesh).with_memory_kind(HOST_MEMORY)


def _in_host_memory(x) -> bool:
  sharding = getattr(x, "sharding", None)
  return sharding is not None and sharding.memory_kind == HOST_MEMORY


class StageWeights:
  """Each stage's weight state, placed by `offload` (one of OFFLOAD_MODES).

  states: {stage name: state pytree}; mesh: the weights are replicated over its devices (None:
  the default device).
  """

  def __init__(self, states: dict, offload: str, mesh: jax.sharding.Mesh | None = None):
    if offload not in OFFLOAD_MODES:
      raise ConfigError(f"unknown offload mode {offload!r}; expected one of {OFFLOAD_MODES}")
    self.offload = offload
    self.device_sharding, self.host_sharding = device_sharding(mesh), host_sharding(mesh)
    # Per leaf: True where the stage's program streams it from host memory itself.
    self.streamed = {stage: jax.tree.map(lambda x: offload == "blocks" and _in_host_memory(x),
                                         state) for stage, state in states.items()}
    home = self.device_sharding if offload == "none" else self.host_sharding
    self.states = {stage: _place(state, jax.tree.map(lambda _: home, state))
                   for stage, state in states.items()}

  def _program_shardings(self, stage: str):
    """Where each leaf of `stage`'s weights is when its programs take it."""
    return jax.tree.map(lambda streamed: self.host_sharding if streamed else self.device_sharding,
                        self.streamed[stage])

  def on_device(self, stage: str):
    """`stage`'s weights as its programs take them: on the device (a fresh copy when
    offloaded), streamed leaves in host memory."""
    state = self.states[stage]
    return state if self.offload == "none" else _place(state, self._program_shardings(stage))

  def release(self, placed) -> None:
    """Frees now the device copies in `placed` (what `on_device` gave), rather than when the
    runtime drops them after the programs that read them; offload "none" places no copies."""
    if self.offload == "none":
      return
    for x in jax.tree.leaves(placed):
      if isinstance(x, jax.Array) and not _in_host_memory(x):
        x.delete()

  def abstract(self, stage: str):
    """`stage`'s weights as abstract program arguments (what `on_device` gives, unplaced)."""
    return jax.tree.map(lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                                 sharding=sharding),
                        self.states[stage], self._program_shardings(stage))

  def device_bytes(self, stage: str) -> int:
    """Bytes of `stage`'s own weights on the device while it runs (streamed leaves not)."""
    return nbytes(jax.tree.map(lambda x, streamed: None if streamed else x, self.states[stage],
                               self.streamed[stage]))

  def streamed_bytes(self, stage: str) -> int:
    """Bytes of `stage`'s weights its program streams from host memory."""
    return nbytes(self.states[stage]) - self.device_bytes(stage)

  def resident_bytes(self, stage: str) -> int:
    """Bytes of weights on the device while `stage` runs: its own, and with offload "none"
    every other stage's too."""
    stages = list(self.states) if self.offload == "none" else [stage]
    return sum(self.device_bytes(s) for s in stages)
