"""DiT forward benchmark (one step, bf16, random weights): time, tokens/s, TFLOP/s, MFU, memory.

  python experiments/bench_dit.py --config configs/seedvr2_3b.py --frames 21 45
  python experiments/bench_dit.py --config configs/seedvr2_7b.py --frames 21
  python experiments/bench_dit.py --config configs/seedvr2_3b.py:tiny --height 64 --width 64  # CPU
  python experiments/bench_dit.py --frames 21 --dit-weights int8 --stream-blocks  # memory budgets

`--dit-weights int8|fp8` holds the block kernels quantised (`models/dit/quantize.py`);
`--stream-blocks` keeps the blocks' weights in pinned host memory and streams them in block by
block (`models/dit/streaming.py`); `weights_gb` is what stays in device memory.
Each (config, frames) runs in its own process so peak memory is per setting. FLOPs follow
`seedvr2_jax.models.dit.flops` (matmuls; attention on unpadded windows); MFU is against
989 TFLOP/s (H100/H200 dense bf16). Results are printed as a table and appended as JSON lines.
"""

import argparse
import json
import os
import subprocess
import sys



def run_one(args) -> dict:
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from seedvr2_jax import config_lib
  from seedvr2_jax.models.dit import config as dit_config
  from seedvr2_jax.models.dit import flops as dit_flops
  from seedvr2_jax.models.dit import quantize, streaming
  from seedvr2_jax.models.dit.nadit import NaDiT
  from seedvr2_jax.utils.benchmark import PEAK_TFLOPS, peak_memory_gb, time_jitted

  cfg = dit_config.from_config_dict(config_lib.load_config(args.config).model,
                                    dtype=args.dtype, param_dtype=args.dtype,
                                    attention_backend=args.attention)
  latent = ((args.frames[0] - 1) // 4 + 1, args.height // 8, args.width // 8)
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: NaDiT(cfg, nnx.Rngs(0))))
  state = jax.jit(lambda: nnx.split(NaDiT(cfg, nnx.Rngs(0)))[1])()
  model = quantize.quantize_model(nnx.merge(graphdef, state), args.dit_weights)
  if args.stream_blocks:
    model = streaming.stream_blocks(model)
  graphdef, state = nnx.split(model)
  del model
  weights_gb = sum(x.nbytes for x in jax.tree.leaves(state)
                   if x.sharding.memory_kind != streaming.HOST_MEMORY) / 1e9
  key = jax.random.key(1)
  vid = jax.random.normal(key, (1, *latent, cfg.vid_in_channels), jnp.dtype(args.dtype))
  txt = jax.random.normal(key, (1, args.txt_len, cfg.txt_in_dim), jnp.dtype(args.dtype))
  timestep = jnp.full((1,), 1000.0, jnp.float32)

  forward = lambda s, v, t, ts: nnx.merge(graphdef, s)(v, t, ts)
  timing = time_jitted(forward, state, vid, txt, timestep, warmup=args.warmup, iters=args.iters)
  seconds = timing["seconds"]
  grid = dit_flops.token_grid(cfg, latent)
  f = dit_flops.forward_flops(cfg, latent, args.txt_len)
  tokens = grid[0] * grid[1] * grid[2]
  tflops = f["total"] / seconds / 1e12
  return dict(
      config=args.config, variant=cfg.variant, frames=args.frames[0],
      size=f"{args.width}x{args.height}", latent=latent, token_grid=grid, txt_len=args.txt_len,
      dtype=args.dtype, attention=args.attention, dit_weights=args.dit_weights,
      stream_blocks=args.stream_blocks, weights_gb=weights_gb, device=jax.devices()[0].device_kind,
      jax=jax.__version__, **timing, tokens_per_s=tokens / seconds, tflop=f["total"] / 1e12,
      attention_share=f["attention"] / f["total"], tflops=tflops,
      mfu=tflops / PEAK_TFLOPS, peak_gb=peak_memory_gb())


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/seedvr2_3b.py")
  parser.add_argument("--frames", type=int, nargs="+", default=[21, 45])
  parser.add_argument("--height", type=int, default=720)
  parser.add_argument("--width", type=int, default=1280)
  parser.add_argument("--txt-len", type=int, default=58)
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--attention", default="auto", choices=["auto", "cudnn", "xla", "splash"])
  parser.add_argument("--dit-weights", default="native", choices=["native", "int8", "fp8"])
  parser.add_argument("--stream-blocks", action="store_true")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--iters", type=int, default=5)
  parser.add_argument("--out", default=None, help="append JSON lines here")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(run_one(args)))
    return
  rows = []
  for frames in args.frames:
    cmd = [sys.executable, __file__, "--child", "--frames", str(frames)]
    for name in ("config", "height", "width", "txt_len", "dtype", "attention", "dit_weights",
                 "warmup", "iters"):
      cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    cmd += ["--stream-blocks"] if args.stream_blocks else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
      print(proc.stderr[-3000:], file=sys.stderr)
      raise SystemExit(f"benchmark failed for {frames} frames")
    rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if args.out:
      with open(args.out, "a") as f:
        f.write(json.dumps(rows[-1]) + "\n")
  print(f"{'model':6} {'weights':>13} {'frames':>6} {'tokens':>12} {'s':>7} {'tok/s':>9} "
        f"{'TFLOP':>7} {'TFLOP/s':>8} {'MFU':>6} {'wts GB':>7} {'peak GB':>8} {'compile s':>9}"
        f"  device")
  for r in rows:
    grid = "x".join(map(str, r["token_grid"]))
    weights = r["dit_weights"] + ("+stream" if r["stream_blocks"] else "")
    print(f"{r['variant']:6} {weights:>13} {r['frames']:>6} {grid:>12} {r['seconds']:7.3f} "
          f"{r['tokens_per_s']:9.0f} {r['tflop']:7.1f} {r['tflops']:8.1f} {r['mfu']:6.1%} "
          f"{r['weights_gb']:7.2f} {r['peak_gb']:8.1f} {r['compile_s']:9.1f}  {r['device']}")


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main()
