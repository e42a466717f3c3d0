"""Restoring within a device-memory budget: seconds per frame and peak device memory of a restore
(SeedVR2-3B / 7B architecture, random weights, bf16) with the budget enforced on JAX's allocator
(XLA_PYTHON_CLIENT_MEM_FRACTION, allocated up front) and given to the planner
(`memory_budget`), beside the same restore with the whole device. `--tiny`: the test-size
models of the same code paths, any backend (on CPU the budget goes to the planner alone: no
allocator cap, no peak).

  python experiments/bench_budget.py                                 # the rows of issue 23
  python experiments/bench_budget.py --rows 3b:21:270x480:1080x1920:24 3b:21:270x480:1080x1920:0
  python experiments/bench_budget.py --tiny --rows 3b:9:32x48:64x96:0.05   # CPU smoke test

A row is VARIANT:FRAMES:LQ_HxW:OUT_HxW:BUDGET_GB (budget 0: the whole device, no plan). Each
variant's random weights are saved once as a checkpoint (in a process of their own, so that
nothing else holds device memory). Each row is a process whose allocator is capped at the
budget: it loads the checkpoint (`restore.load_session`, timed), restores an H.264 LQ clip of
the real sample video (bikes, as bench_restore) once cold (compilation included) and once warm,
and reports the plan, seconds per output frame of the warm run and the device's peak bytes in
use over the whole process. One JSON line per row (--out), a markdown row printed.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DEFAULT_ROWS = ("3b:21:180x320:720x1280:0", "3b:21:180x320:720x1280:12",
                "3b:21:270x480:1080x1920:0", "3b:21:270x480:1080x1920:24",
                "3b:21:540x960:2160x3840:40", "3b:21:540x960:2160x3840:0",
                "7b:21:180x320:720x1280:0", "7b:21:180x320:720x1280:24",
                "7b:21:270x480:1080x1920:0", "7b:21:270x480:1080x1920:40")


def save_random_checkpoint(variant: str, path: str, tiny: bool = False) -> None:
  """Random bf16 weights of the official `variant` DiT and the VAE (`tiny`: their test sizes),
  saved as a checkpoint."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from seedvr2_jax.convert import bundle as bundle_lib
  from seedvr2_jax.models.dit import config as dit_config
  from seedvr2_jax.models.dit.nadit import NaDiT
  from seedvr2_jax.models.vae import config as vae_config
  from seedvr2_jax.models.vae.autoencoder import VideoAutoencoder

  dtype = "bfloat16"
  dit_sizes, vae_sizes = (dit_config.TINY[variant], vae_config.TINY) if tiny else ({}, {})
  dit = NaDiT(dit_config.official(variant, param_dtype=dtype, dtype=dtype, **dit_sizes),
              nnx.Rngs(0))
  vae = VideoAutoencoder(vae_config.VAEConfig(param_dtype=dtype, dtype=dtype, **vae_sizes),
                         nnx.Rngs(1))
  pos = jax.random.normal(jax.random.key(2), (58, dit.cfg.txt_in_dim), jnp.bfloat16)
  neg = jax.random.normal(jax.random.key(3), (64, dit.cfg.txt_in_dim), jnp.bfloat16)
  bundle_lib.save(bundle_lib.Bundle(dit.cfg, vae.cfg, nnx.state(dit), nnx.state(vae), pos, neg),
                  path)


def run_row(row: str, checkpoint: str, workdir: str) -> dict:
  """One budgeted restore, cold then warm, in this process (the allocator cap is set by the
  parent)."""
  import jax

  from seedvr2_jax.infer import restore
  from seedvr2_jax.infer.options import RestoreOptions
  from experiments.bench_restore import lq_video

  variant, frames, lq, out, budget = row.split(":")
  frames, budget = int(frames), float(budget)
  lq_h, lq_w = (int(v) for v in lq.split("x"))
  out_h, out_w = (int(v) for v in out.split("x"))
  src = os.path.join(workdir, f"lq_{frames}_{lq}.mp4")
  if not os.path.exists(src):
    lq_video(src, frames, lq_h, lq_w)
  options = RestoreOptions(checkpoint=checkpoint, resolution=(out_h, out_w), overwrite=True,
                           memory_budget=budget or None, cache_dir=os.path.join(workdir, "cache"))
  log = []

  def note(line: str) -> None:
    log.append(line)
    print(line, file=sys.stderr, flush=True)  # kept with the row's stderr when it fails

  start = time.perf_counter()
  session = restore.load_session(options, log=note)
  load_s = time.perf_counter() - start
  seconds = []
  for _ in range(2):
    start = time.perf_counter()
    written = restore.restore_media(src, os.path.join(workdir, "out.mp4"), options,
                                    log=note, progress_stream=open(os.devnull, "w"),
                                    session=session)
    seconds.append(time.perf_counter() - start)
  stats = jax.devices()[0].memory_stats() or {}
  return dict(row=row, variant=variant, frames=written, output=f"{out_w}x{out_h}",
              budget_gb=budget, device=jax.devices()[0].device_kind, jax=jax.__version__,
              limit_gb=stats.get("bytes_limit", 0) / 1e9,
              peak_gb=stats.get("peak_bytes_in_use", 0) / 1e9, load_s=load_s,
              cold_s=seconds[0], warm_s=seconds[1], s_per_frame=seconds[1] / written,
              plan=[line for line in log if line.startswith(("memory plan", "  "))])


def device_gb() -> float | None:
  """The first GPU's memory in GB (nvidia-smi: the parent holds no device memory); None
  without an NVIDIA GPU."""
  try:
    mib = subprocess.run(["nvidia-smi", "--query-gpu=memory.total",
                          "--format=csv,noheader,nounits", "-i", "0"],
                         capture_output=True, text=True, check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    return None
  return float(mib) * 2**20 / 1e9


def allocator_env(budget: float, total_gb: float | None) -> dict:
  """The child's environment: JAX's GPU allocator given `budget` GB (0: 95% of the GPU) as one
  region allocated up front, as on a card of that size. (Grown on demand, the allocator's
  regions are separate ranges, and no program's one buffer of temporaries can span two.)"""
  if total_gb is None:
    return dict(os.environ)
  return dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="true",
              XLA_PYTHON_CLIENT_MEM_FRACTION=f"{(budget or 0.95 * total_gb) / total_gb:.4f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS),
                      help="VARIANT:FRAMES:LQ_HxW:OUT_HxW:BUDGET_GB (0: no budget)")
  parser.add_argument("--out", help="append JSON lines here")
  parser.add_argument("--child", nargs=3, metavar=("ROW", "CHECKPOINT", "WORKDIR"),
                      help=argparse.SUPPRESS)
  parser.add_argument("--save", nargs=2, metavar=("VARIANT", "PATH"), help=argparse.SUPPRESS)
  parser.add_argument("--workdir", help="keep checkpoints, clips and compiled programs here "
                      "(reused by a later run; default: a temporary directory)")
  parser.add_argument("--tiny", action="store_true",
                      help="the test-size models (a smoke test on any backend)")
  args = parser.parse_args()
  if args.save:
    save_random_checkpoint(*args.save, tiny=args.tiny)
    return
  if args.child:
    print(json.dumps(run_row(*args.child)))
    return
  total_gb = device_gb()
  if total_gb is None and not args.tiny:
    sys.exit("bench_budget: needs an NVIDIA GPU (nvidia-smi found none); --tiny runs anywhere")
  print("| model | output | frames | budget | plan | load s | cold s | s/frame | peak GB | device |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  with contextlib.ExitStack() as stack:
    workdir = args.workdir or stack.enter_context(tempfile.TemporaryDirectory())
    os.makedirs(workdir, exist_ok=True)
    checkpoints = {}
    for row in args.rows:
      variant, budget = row.split(":")[0], float(row.split(":")[-1])
      if variant not in checkpoints:
        checkpoints[variant] = os.path.join(workdir, f"seedvr2_{variant}{'_tiny' * args.tiny}")
      if not os.path.isdir(checkpoints[variant]):
        subprocess.run([sys.executable, __file__, "--save", variant, checkpoints[variant],
                        *(["--tiny"] if args.tiny else [])], check=True)
      proc = subprocess.run([sys.executable, __file__, "--child", row, checkpoints[variant],
                             workdir], capture_output=True, text=True,
                            env=allocator_env(budget, total_gb))
      if proc.returncode:
        errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
        print(f"| {row}: failed (exit {proc.returncode}): "
              f"{(errors or proc.stderr.strip().splitlines() or [''])[-1][:300]} |", flush=True)
        if args.out:
          with open(f"{args.out}.{row.replace(':', '_')}.stderr", "w") as f:
            f.write(proc.stderr)
        continue
      r = json.loads(proc.stdout.strip().splitlines()[-1])
      if args.out:
        with open(args.out, "a") as f:
          f.write(json.dumps(r) + "\n")
      plan = r["plan"][0].split(": ", 1)[-1] if r["plan"] else "as given"
      print(f"| {r['variant'].upper()} | {r['output']} | {r['frames']} | "
            f"{r['budget_gb'] or 'none'} | {plan} | {r['load_s']:.1f} | {r['cold_s']:.1f} | "
            f"{r['s_per_frame']:.3f} | {r['peak_gb']:.1f} | {r['device']} |", flush=True)


if __name__ == "__main__":
  main()
