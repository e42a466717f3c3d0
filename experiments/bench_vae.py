"""Causal VAE benchmark (bf16, random weights): encode and decode separately.

  python experiments/bench_vae.py                      # the default settings below
  python experiments/bench_vae.py --runs encode:21:720x1280:8 decode:21:720x1280:2
  python experiments/bench_vae.py --runs decode:21:720x1280:1 --profile   # + device time per op
  python experiments/bench_vae.py --runs decode:21:720x1280:1 --profile --trace-dir /tmp/tr  # + HLO
  python experiments/bench_vae.py --runs decode:101:720x1280:1 --fold-max-elements 536870912
  python experiments/bench_vae.py --runs decode:21:1080x1920:1:544x960:64   # tiled, tile-major

A run is MODE:FRAMES:HxW:CHUNK[:TILE_HxW[:OVERLAP]] (CHUNK = frames per encode chunk, latents
per decode chunk, 0 = one pass; TILE, OVERLAP: spatial tiles in pixels, overlap 64 by default).
Each run is its own process, so peak memory is per run. FLOPs are convolution and matmul FLOPs
counted from a jaxpr (`seedvr2_jax.utils.flops`): `tflop` of the one-pass computation (the
model's count, the basis of MFU against 989 TFLOP/s, H100/H200 dense bf16) and `tflop_run` of
the chunked program that runs (its first frame alone needs fewer), the basis of the achieved
TFLOP/s.
"""

import argparse
import json
import os
import subprocess
import sys
import time

DEFAULT_RUNS = ["encode:21:720x1280:4", "encode:101:720x1280:4", "encode:21:1080x1920:4",
                "decode:21:720x1280:1", "decode:101:720x1280:1", "decode:21:1080x1920:1"]


def run_one(spec: str, iters: int, warmup: int, profile: bool, fold_max: int | None,
            trace_dir: str | None = None) -> dict:
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from seedvr2_jax.models.vae import autoencoder, codec, layers
  from seedvr2_jax.models.vae import config as vae_config
  from seedvr2_jax.utils.benchmark import (PEAK_TFLOPS, device_time_by_op, peak_memory_gb,
                                          time_jitted)
  from seedvr2_jax.utils.flops import count_flops

  if fold_max:
    layers.FOLD_MAX_ELEMENTS = fold_max
  mode, frames, size, chunk, *tiling = spec.split(":")
  tiles = {} if not tiling else dict(
      tile_px=tuple(int(v) for v in tiling[0].split("x")),
      overlap_px=(int(tiling[1]),) * 2 if len(tiling) > 1 else (64, 64))
  frames, chunk = int(frames), int(chunk) or None
  height, width = (int(v) for v in size.split("x"))
  cfg = vae_config.VAEConfig(dtype="bfloat16", param_dtype="bfloat16")
  start = time.perf_counter()
  graphdef, state = nnx.split(autoencoder.VideoAutoencoder(cfg, nnx.Rngs(0)))
  init_s = time.perf_counter() - start
  key = jax.random.key(1)
  if mode == "encode":
    x = jax.random.uniform(key, (1, frames, height, width, 3), jnp.bfloat16, -1, 1)
    fn = lambda s, x, c, t: codec.encode(nnx.merge(graphdef, s), x, chunk_frames=c, **t)
  else:
    latents = cfg.latent_frames(frames)
    x = jax.random.normal(key, (1, latents, height // 8, width // 8, 16), jnp.bfloat16)
    fn = lambda s, z, c, t: codec.decode(nnx.merge(graphdef, s), z, chunk_latents=c, **t)
  flops = count_flops(lambda s, v: fn(s, v, None, {}), state, x)
  flops_run = count_flops(lambda s, v: fn(s, v, chunk, tiles), state, x)
  t = time_jitted(lambda s, v: fn(s, v, chunk, tiles), state, x, warmup=warmup, iters=iters)
  if profile:
    compiled = jax.jit(lambda s, v: fn(s, v, chunk, tiles)).lower(state, x).compile()
    jax.block_until_ready(compiled(state, x))
    t["op_ms"] = device_time_by_op(lambda: compiled(state, x), top=40, trace_dir=trace_dir)
    if trace_dir:
      with open(os.path.join(trace_dir, f"{mode}_hlo.txt"), "w") as f:
        f.write(compiled.as_text())
  return dict(mode=mode, frames=frames, size=f"{width}x{height}", chunk=chunk or 0,
              tile=":".join(tiling),
              device=jax.devices()[0].device_kind, jax=jax.__version__, **t,
              fps=frames / t["seconds"], tflop=flops / 1e12, tflop_run=flops_run / 1e12,
              tflops=flops_run / t["seconds"] / 1e12,
              mfu=flops / t["seconds"] / 1e12 / PEAK_TFLOPS, peak_gb=peak_memory_gb(),
              fold_max_elements=layers.FOLD_MAX_ELEMENTS,
              init_s=init_s)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", nargs="+", default=DEFAULT_RUNS)
  parser.add_argument("--iters", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--out", default=None, help="append JSON lines here")
  parser.add_argument("--fold-max-elements", type=int, default=None,
                      help="override layers.FOLD_MAX_ELEMENTS (the stacked-taps group size)")
  parser.add_argument("--profile", action="store_true",
                      help="also trace one call and report device time per HLO op (op_ms)")
  parser.add_argument("--trace-dir", default=None,
                      help="with --profile: keep the trace and the compiled HLO "
                      "(MODE_hlo.txt) here")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.fold_max_elements is not None and args.fold_max_elements <= 0:
    parser.error(f"--fold-max-elements must be positive, got {args.fold_max_elements}")
  if args.child:
    print(json.dumps(run_one(args.runs[0], args.iters, args.warmup, args.profile,
                             args.fold_max_elements, args.trace_dir)))
    return
  if args.profile:  # the children inherit it; their timed calls run without CUDA graphs too
    from seedvr2_jax.utils import xla_flags
    xla_flags.apply_profile_flags()
  rows = []
  for spec in args.runs:
    cmd = [sys.executable, __file__, "--child", "--runs", spec, "--iters", str(args.iters),
           "--warmup", str(args.warmup), *(["--profile"] if args.profile else []),
           *(["--trace-dir", args.trace_dir] if args.trace_dir else []),
           *(["--fold-max-elements", str(args.fold_max_elements)] if args.fold_max_elements
             else [])]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
      print(f"{spec}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
      continue
    rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rows[-1]["process_s"] = time.perf_counter() - started
    if args.out:
      with open(args.out, "a") as f:
        f.write(json.dumps(rows[-1]) + "\n")
    r = rows[-1]
    print(f"{r['mode']:6} {r['frames']:>4} {r['size']:>10} chunk {r['chunk']:>2}"
          f"{' tile ' + r['tile'] if r['tile'] else ''}: "
          f"{r['seconds']:6.3f} s {r['fps']:6.1f} fps {r['tflop']:7.1f} TFLOP (runs "
          f"{r['tflop_run']:.1f}) {r['tflops']:6.1f} TFLOP/s MFU {r['mfu']:6.1%} "
          f"peak {r['peak_gb']:5.1f} GB "
          f"(XLA temp {r['temp_gb']:4.1f}) "
          f"compile {r['compile_s']:5.1f} s (process {r['process_s']:.0f} s)  {r['device']}",
          flush=True)
    for op, ms in r.get("op_ms", {}).items():
      print(f"  {ms:8.1f} ms  {op}")


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main()
