"""Where the weights of each restore stage live between and during its programs.

`offload` "none": every stage's weights stay on the device. "stages": they are kept in pinned
host memory and copied to the device for their own stage only; the copy is freed when the stage's
programs have run and the caller drops it. States may be abstract (`jax.ShapeDtypeStruct`
leaves): then nothing is placed, and `on_device` gives the abstract device arguments (memory
estimates of models that are not loaded).
A mode that streams the DiT's scanned block weights from host memory inside its program
(`models/dit/streaming.py: stream_blocks`) would leave those leaves on `host_sharding` in
`on_device` (and in `abstract`), so the DiT program takes them there. Quantised DiT kernels
(`RestoreOptions.dit_weights`, applied by `restore.load_session`) are placed like any other
weights (their q and scale are leaves).
"""

from __future__ import annotations

import jax

from seedvr2_jax.errors import ConfigError
from seedvr2_jax.infer.options import OFFLOAD_MODES


def _place(tree, sharding):
  """`tree` on `sharding`: arrays copied there, abstract leaves given that sharding."""
  def place(x):
    if isinstance(x, jax.ShapeDtypeStruct):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
    return jax.device_put(x, sharding)
  return jax.tree.map(place, tree)


def nbytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


class StageWeights:
  """Each stage's weight state, placed by `offload` (one of OFFLOAD_MODES).

  states: {stage name: state pytree}; mesh: the weights are replicated over its devices (None:
  the default device).
  """

  def __init__(self, states: dict, offload: str, mesh: jax.sharding.Mesh | None = None):
    if offload not in OFFLOAD_MODES:
      raise ConfigError(f"unknown offload mode {offload!r}; expected one of {OFFLOAD_MODES}")
    self.offload = offload
    self.device_sharding = (
        jax.sharding.SingleDeviceSharding(jax.devices()[0]) if mesh is None
        else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    home = self.device_sharding if offload == "none" else self.host_sharding
    self.states = {stage: _place(state, home) for stage, state in states.items()}

  @property
  def host_sharding(self) -> jax.sharding.Sharding:
    return self.device_sharding.with_memory_kind("pinned_host")

  def on_device(self, stage: str):
    """`stage`'s weights as its programs take them: on the device (a fresh copy when
    offloaded)."""
    state = self.states[stage]
    return state if self.offload == "none" else _place(state, self.device_sharding)

  def abstract(self, stage: str):
    """`stage`'s weights as abstract device arguments (what `on_device` gives, unplaced)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                       sharding=self.device_sharding),
                        self.states[stage])

  def resident_bytes(self, stage: str) -> int:
    """Bytes of weights on the device while `stage` runs: its own, and with offload "none"
    every other stage's too."""
    stages = [stage] if self.offload == "stages" else list(self.states)
    return sum(nbytes(self.states[s]) for s in stages)
