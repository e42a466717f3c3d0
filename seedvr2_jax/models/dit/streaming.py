"""Host-streamed DiT blocks: block weights in host memory, moved to the device one block at a time.

For device memory budgets below the DiT's weights (the JAX form of "block swapping"):

    streamed = streaming.stream_blocks(dit)            # after loading (and `quantize_model`)
    graphdef, state = nnx.split(streamed)              # blocks' leaves: memory kind pinned_host
    out = jax.jit(lambda s, *a: nnx.merge(graphdef, s)(*a))(state, vid, txt, t)

`stream_blocks` regroups the blocks as `scan_segments` does (the 3B: [0, 10), [10, 30), [30],
[31]; the 7B: [0, 36)) into `nadit.BlockStack`s whose weights are stacked on the host (Linear
weights in `cfg.dtype`, quantised kernels as they are) and placed in `sharding` (default: the
first device's `pinned_host` memory). The model then runs each stack as one `lax.scan` whose
step copies one repeat's weights (a pair of blocks, or one block) to device memory
(`jax.device_put(..., jax.memory.Space.Device)`) and applies it, so about one pair's weights
are on the device at a time and XLA may overlap the next step's copy with this step's compute.
The other weights (embeddings, time embedding, output head) stay where they were: keep them on
the device. Pass the state to `jit` as it is (its placement is part of the argument): a
`device_put` of the whole state onto device memory undoes the streaming. Outputs equal the
resident model's (`tests/test_dit_weights.py`). A streamed model runs `__call__` only (no
`hidden_states` taps). An abstract model (`jax.ShapeDtypeStruct` leaves, for memory estimates)
gives an abstract streamed model: the stacks' leaves carry `sharding`, nothing is copied.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seedvr2_jax.models.dit.nadit import BlockStack, NaDiT, cast_linear_params, scan_segments
from seedvr2_jax.models.dit.nadit import stack_states

HOST_MEMORY = "pinned_host"


def host_sharding(device: jax.Device | None = None) -> jax.sharding.Sharding:
  """`device`'s (default: the first device's) pinned host memory."""
  return jax.sharding.SingleDeviceSharding(device or jax.devices()[0], memory_kind=HOST_MEMORY)


def stream_blocks(dit: NaDiT, sharding: jax.sharding.Sharding | None = None) -> NaDiT:
  """`dit` with its blocks regrouped into `BlockStack`s whose weights are in `sharding`
  (default `host_sharding()`), stacked in host memory; the other weights are shared with
  `dit` (drop `dit` to free its device copy of the blocks)."""
  sharding = sharding or host_sharding()
  dtype = jnp.dtype(dit.cfg.dtype)
  splits = [nnx.split(block) for block in dit.blocks]
  stacks = []
  for start, stop in scan_segments([graphdef for graphdef, _ in splits]):
    step = 1 if stop - start == 1 else 2
    modules = []
    for k in range(step):
      states = [splits[i][1] for i in range(start + k, stop, step)]
      modules.append(nnx.merge(splits[start + k][0], _stacked(states, dtype, sharding)))
    stacks.append(BlockStack(modules, start, stop))
  graphdef, state = nnx.split(dit)
  streamed = nnx.merge(graphdef, state)  # a new module sharing the arrays
  streamed.blocks = nnx.List(stacks)
  return streamed


def _stacked(states: list[nnx.State], dtype, sharding: jax.sharding.Sharding) -> nnx.State:
  """Block states of one graph -> one state with a leading axis over them, Linear parameters
  in `dtype`, stacked in host memory and placed in `sharding` (abstract states: an abstract
  state with that sharding)."""
  cast = lambda state: cast_linear_params(state, dtype)
  if all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(states)):
    abstract = jax.eval_shape(lambda states: stack_states([cast(s) for s in states]), states)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        abstract)
  return jax.device_put(stack_states([cast(jax.device_get(s)) for s in states], np.stack),
                        sharding)
