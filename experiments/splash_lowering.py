"""Compiles the NaDiT forward (or its parameter gradient) with splash attention for a TPU
topology on a CPU-only host, with the compile-only TPU devices of the `libtpu` wheel that jax
names for `jax[tpu]` (jax 0.11.2: `pip install 'libtpu==0.0.48.*'`).

  JAX_PLATFORMS=cpu python experiments/splash_lowering.py --topology v5p:2x2x1 --layers 2
  JAX_PLATFORMS=cpu python experiments/splash_lowering.py --topology v5p:4x4x4 --variant 7b \
      --mesh data=16,tensor=4 --grad --scan

The attention backend is set to "splash" explicitly: "auto" resolves on the host's backend
(CPU here). The step is traced with the mesh as context, so each kernel runs in a shard_map
(batch over data/fsdp, heads over tensor/sequence). Prints the splash kernels in the compiled
program, per-chip memory, XLA's FLOP estimate against the model FLOPs, and the collectives.
"""

import argparse
import collections
import os
import re
import sys
import time


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--topology", default="v5p:2x2x1", help="TPU topology name")
  parser.add_argument("--variant", default="3b", choices=["3b", "7b"])
  parser.add_argument("--layers", type=int, default=None, help="default: the official depth")
  parser.add_argument("--frames", type=int, default=21)
  parser.add_argument("--height", type=int, default=720)
  parser.add_argument("--width", type=int, default=1280)
  parser.add_argument("--txt-len", type=int, default=58)
  parser.add_argument("--mesh", default="data=-1", help="axis=size,... (see parallel/mesh.py)")
  parser.add_argument("--batch", type=int, default=None, help="default: data x fsdp size")
  parser.add_argument("--grad", action="store_true", help="the parameter gradient (training)")
  parser.add_argument("--scan", action="store_true", help="blocks under lax.scan (compiles "
                      "faster: each kernel once)")
  args = parser.parse_args()

  import jax
  import jax.numpy as jnp
  from flax import nnx
  from jax.experimental import topologies
  from jax.sharding import NamedSharding, PartitionSpec

  from seedvr2_jax import config_lib
  from seedvr2_jax.models.dit import config as dit_config
  from seedvr2_jax.models.dit import flops as dit_flops
  from seedvr2_jax.models.dit.nadit import NaDiT
  from seedvr2_jax.parallel import mesh as mesh_lib
  from seedvr2_jax.parallel import sharding

  topology = topologies.get_topology_desc(args.topology, "tpu")
  sizes = {k: int(v) for k, v in (item.split("=") for item in args.mesh.split(","))}
  mesh = mesh_lib.make_mesh(sizes, devices=topology.devices)
  layers = {} if args.layers is None else {"num_layers": args.layers}
  cfg = dit_config.from_config_dict(
      config_lib.load_config(f"configs/seedvr2_{args.variant}.py").model,
      attention_backend="splash", scan_layers=args.scan, **layers,
      **({"param_dtype": "float32", "remat": "full"} if args.grad else {"param_dtype": "bfloat16"}))
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: NaDiT(cfg, nnx.Rngs(0))))
  state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract,
                       sharding.state_shardings(abstract, mesh))
  batch = args.batch or mesh.shape["data"] * mesh.shape["fsdp"]
  latent = ((args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
  batched = NamedSharding(mesh, PartitionSpec(mesh_lib.BATCH_AXES))
  inputs = [jax.ShapeDtypeStruct(shape, dtype, sharding=batched) for shape, dtype in (
      ((batch, *latent, cfg.vid_in_channels), jnp.bfloat16),
      ((batch, args.txt_len, cfg.txt_in_dim), jnp.bfloat16), ((batch,), jnp.float32))]

  def forward(state, vid, txt, timestep):
    return nnx.merge(graphdef, state)(vid, txt, timestep)

  def gradient(state, vid, txt, timestep):
    return jax.grad(lambda s: jnp.mean(forward(s, vid, txt, timestep) ** 2))(state)

  fn = jax.jit(mesh_lib.traced_with_mesh(gradient if args.grad else forward, mesh))
  start = time.perf_counter()
  lowered = fn.lower(state, *inputs)
  lowered_s = time.perf_counter() - start
  compiled = lowered.compile()
  compiled_s = time.perf_counter() - start - lowered_s
  hlo = compiled.as_text()

  chips, memory = len(topology.devices), compiled.memory_analysis()
  model_flops = dit_flops.forward_flops(cfg, latent, args.txt_len)["total"] * batch * (
      3 if args.grad else 1)
  kernels = collections.Counter(re.findall(r"%(splash_mha_[a-z_]+)[.\d]* = .*custom-call\(", hlo))
  collectives = collections.Counter(re.findall(
      r"= \S+ (all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)(?:-start)?\(",
      hlo))
  print(f"{args.topology}: {chips} chips ({topology.devices[0].device_kind}), "
        f"{len({d.process_index for d in topology.devices})} hosts; mesh {dict(mesh.shape)}")
  print(f"{cfg.variant} x {cfg.num_layers} layers, {'gradient' if args.grad else 'forward'}, "
        f"batch {batch}, latent {latent}, text {args.txt_len}")
  print(f"lowered in {lowered_s:.1f} s, compiled in {compiled_s:.1f} s")
  print("splash kernels: " + ", ".join(f"{k} x{n}" for k, n in sorted(kernels.items())))
  gib = lambda n: f"{n / 2**30:.2f} GiB"
  print(f"per chip: arguments {gib(memory.argument_size_in_bytes)}, temporaries "
        f"{gib(memory.temp_size_in_bytes)}, outputs {gib(memory.output_size_in_bytes)}")
  xla_flops = (compiled.cost_analysis() or {}).get("flops", 0.0)
  print(f"FLOPs per chip: XLA {xla_flops / 1e12:.2f} T (Mosaic kernels uncounted"
        f"{', a scanned body once' if args.scan else ''}), model {model_flops / chips / 1e12:.2f} T")
  print("collectives: " + (", ".join(f"{k} x{n}" for k, n in sorted(collectives.items()))
                           or "none"))


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main()
