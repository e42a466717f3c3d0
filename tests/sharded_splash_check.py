"""Run by test_splash_attention.py in a subprocess with 4 CPU devices: packed window attention
with the splash backend on a sharded mesh (the kernel in a shard_map over the context mesh)
versus the padded XLA backend on one device, forward and gradient; prints max |err| / max |ref|
of both as one JSON line."""

import json
import os
import sys

import jax

jax.config.update("jax_num_cpu_devices", 4)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from seedvr2_jax.models.dit import window_attention as wattn  # noqa: E402
from seedvr2_jax.models.dit import window_packing  # noqa: E402
from seedvr2_jax.models.dit import window_plan as wp  # noqa: E402
from seedvr2_jax.ops import splash  # noqa: E402
from seedvr2_jax.parallel import mesh as mesh_lib  # noqa: E402

GRID, WINDOWS, TXT = (2, 18, 32), (4, 3, 3), 6
# Batch over "data", the 2 heads over "sequence".
SIZES = {"data": 2, "sequence": 2}


def forward_and_grad(layout, backend: str, mesh):
  n = int(np.prod(GRID))
  keys = jax.random.split(jax.random.key(0), 6)
  vid = [jax.random.normal(k, (2, n, 2, 32)) for k in keys[:3]]
  txt = [jax.random.normal(k, (2, TXT, 2, 32)) for k in keys[3:]]
  txt_len = jnp.array([TXT, 3], jnp.int32)

  def run(vid, txt, txt_len):
    def loss(vid):
      out_vid, out_txt = wattn.window_attention(*vid, *txt, txt_len, layout=layout,
                                                backend=backend)
      return jnp.sum(out_vid ** 2) + jnp.sum(out_txt[0] ** 2), (out_vid, out_txt[0])
    return jax.grad(loss, has_aux=True)(vid)

  if mesh is None:
    return jax.jit(run)(vid, txt, txt_len)
  vid, txt, txt_len = jax.device_put((vid, txt, txt_len),
                                     NamedSharding(mesh, PartitionSpec(mesh_lib.BATCH_AXES)))
  fn = jax.jit(mesh_lib.traced_with_mesh(run, mesh))
  assert "manual" in fn.lower(vid, txt, txt_len).as_text()  # the kernel runs in a shard_map
  return fn(vid, txt, txt_len)


def main():
  padded = wattn.attention_layout(GRID, WINDOWS, wp.SHIFTED, TXT)
  packed = window_packing.packed_layout(GRID, WINDOWS, wp.SHIFTED, TXT, splash.BLOCK)
  ref = jax.tree.leaves(forward_and_grad(padded, "xla", None))
  out = jax.tree.leaves(forward_and_grad(packed, "splash", mesh_lib.make_mesh(SIZES)))
  print(json.dumps({"max_rel_err": max(float(np.abs(a - b).max() / np.abs(b).max())
                                       for a, b in zip(out, ref)), "arrays": len(ref)}))


if __name__ == "__main__":
  main()
