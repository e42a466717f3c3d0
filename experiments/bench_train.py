"""Training-step benchmark: SeedVR2 DiT diffusion training or one APT iteration (fp32 master
weights and AdamW state, bf16 compute, rematerialised blocks) on precomputed latents, 720p x 21
frames per sample.

  python experiments/bench_train.py                                   # 3B on every local GPU
  python experiments/bench_train.py --runs 3b:1 3b:2 7b:2 --out r.jsonl  # variant:devices
  python experiments/bench_train.py --remat full dots                  # both policies, one build
  python experiments/bench_train.py --remat names --remat-names qkv attention  # remat by name
  python experiments/bench_train.py --objective apt --runs 3b:1 3b:2   # G step + D step
  python experiments/bench_train.py --objective apt --d-sequential --scan-layers --runs 3b:2
  python experiments/bench_train.py --objective apt --optimizer rmsprop --runs 3b:1  # APT's
  python experiments/bench_train.py --runs 7b:2 --scan-layers          # blocks under lax.scan

Each run (its own process) builds `configs/train_3b.py`-style state with FSDP over the given
number of devices (batch = 1 sample per device); then, for each --remat policy in turn, compiles
the step, runs --warmup steps and times --steps steps (memory: the compiled step's temporaries
and arguments; a policy that runs out of memory is reported and skipped). Model FLOPs per
step = 3 x the DiT forward (6 x params x tokens for the linear layers plus attention), per
`models/dit/flops.py`, and 19 x for APT (the objective's `throughput`); MFU against 989 TFLOP/s
per device. For APT, --remat applies to the generator; the discriminator uses
`config.apt.d_remat` (full).
"""

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LATENT_720P_21 = (6, 90, 160)  # 21 frames -> 6 latent frames; 720x1280 -> 90x160


def with_remat(run, remat: str):
  """The run with another remat policy for the DiT: same state, a new graph definition."""
  from flax import nnx

  from seedvr2_jax.models.dit.nadit import NaDiT
  from seedvr2_jax.train import state as state_lib
  objective = run.objective
  objective.dit_cfg = dataclasses.replace(objective.dit_cfg, remat=remat)
  objective.dit.graphdef = state_lib.split_model(
      nnx.eval_shape(lambda: NaDiT(objective.dit_cfg, nnx.Rngs(0))))[0]
  return run


def run_one(variant: str, devices: int, args) -> list[dict]:
  """One build, then each remat policy of --remat in turn (the state carries over)."""
  import jax

  from seedvr2_jax import config_lib
  from seedvr2_jax.train import data, loop
  from seedvr2_jax.utils.benchmark import PEAK_TFLOPS, peak_memory_gb

  name = "tiny.py" if variant == "tiny" else f"train_{variant}.py"  # tiny: a CPU smoke test
  config = config_lib.load_config(os.path.join(ROOT, "configs", name))
  latent = tuple(args.latent) or ((2, 8, 8) if variant == "tiny" else LATENT_720P_21)
  config.objective = args.objective
  config.apt.d_sequential = args.d_sequential
  config.optim.name = config.d_optim.name = args.optimizer
  config.model.scan_layers = args.scan_layers
  config.mesh.update(data=1, fsdp=devices, sequence=1, tensor=1)
  config.ema_decay = args.ema
  config.batch_size = devices
  start = time.perf_counter()
  run = loop.build(config, jax.devices()[:devices])
  build_s = time.perf_counter() - start
  print(f"built in {build_s:.0f} s", file=sys.stderr, flush=True)
  batch = next(data.SyntheticMoments(run.mesh, devices, latent))
  work = run.objective.throughput(batch, run.objective.phase(0))
  flops, tokens = work.flops, work.tokens
  params = sum(x.size for x in jax.tree.leaves(run.state.params))  # G and D for APT
  state, results = run.state, []
  for remat in args.remat:
    run = with_remat(run, remat)
    result = dict(variant=variant, objective=args.objective, scan_layers=args.scan_layers,
                  d_sequential=args.d_sequential, optimizer=args.optimizer, latent=latent,
                  devices=devices,
                  device=jax.devices()[0].device_kind,
                  jax=jax.__version__, params=params, remat=remat, ema=args.ema, batch=devices,
                  tokens_per_step=tokens, build_s=build_s)
    try:
      start = time.perf_counter()
      compiled = loop.make_step_fn(run).lower(state, batch, run.frozen).compile()
      result["compile_s"] = time.perf_counter() - start
      print(f"{remat}: compiled in {result['compile_s']:.0f} s", file=sys.stderr, flush=True)
      memory = compiled.memory_analysis()
      result["temp_gb"] = memory.temp_size_in_bytes / 1e9
      result["args_gb"] = memory.argument_size_in_bytes / 1e9
      for _ in range(args.warmup):
        state, metrics = compiled(state, batch, run.frozen)
      jax.block_until_ready(state)
      times = []
      for _ in range(args.steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch, run.frozen)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - start)
    except Exception as e:  # out of memory for this policy: report it, try the next
      result["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
      results.append(result)
      continue
    step_s = statistics.median(times)
    tflops = flops / step_s / 1e12 / devices
    result.update(step_s=step_s, step_s_min=min(times), tokens_per_s=tokens / step_s,
                  tflops_per_device=tflops, mfu=tflops / PEAK_TFLOPS,
                  loss=float(metrics["loss"]), peak_gb_so_far=peak_memory_gb())
    results.append(result)
  return results


def main():
  from seedvr2_jax.models.dit.config import REMAT_POLICIES
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", nargs="+", default=["3b:1"], help="VARIANT:DEVICES")
  parser.add_argument("--remat", nargs="+", default=["full"], choices=REMAT_POLICIES,
                      help="policies to time, in this order, on one build (least memory first)")
  parser.add_argument("--objective", default="diffusion", choices=["diffusion", "apt"])
  parser.add_argument("--scan-layers", action="store_true",
                      help="run repeating block pairs under lax.scan (model.scan_layers)")
  parser.add_argument("--d-sequential", action="store_true",
                      help="APT: the D step's sample groups one at a time (apt.d_sequential)")
  parser.add_argument("--latent", type=int, nargs=3, default=(), metavar=("T", "H", "W"),
                      help="latent frames, height, width per sample (default: 720p x 21)")
  parser.add_argument("--optimizer", default="adamw", choices=["adamw", "rmsprop"],
                      help="G's and D's optimizer (rmsprop: APT's, one moment instead of two)")
  parser.add_argument("--ema", type=float, default=0.0, help="EMA decay (0: no EMA copy)")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--out", help="append JSON lines here")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    variant, devices = args.runs[0].split(":")
    for r in run_one(variant, int(devices), args):
      print(json.dumps(r))
    return
  for spec in args.runs:
    cmd = [sys.executable, __file__, "--child", "--runs", spec, "--remat", *args.remat,
           "--objective", args.objective, *(["--scan-layers"] if args.scan_layers else []),
           *(["--d-sequential"] if args.d_sequential else []), "--optimizer", args.optimizer,
           *(["--latent", *map(str, args.latent)] if args.latent else []),
           "--ema",
           str(args.ema), "--warmup", str(args.warmup), "--steps", str(args.steps)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
      print(f"{spec}: failed\n{proc.stderr[-3000:]}", file=sys.stderr, flush=True)
      continue
    for line in proc.stdout.strip().splitlines():
      r = json.loads(line)
      if args.out:
        with open(args.out, "a") as f:
          f.write(json.dumps(r) + "\n")
      head = (f"{r['objective']} {r['variant']} x{r['devices']} {r['device']} "
              f"remat={r['remat']}{' scan' if r['scan_layers'] else ''}"
              f"{' d-sequential' if r['d_sequential'] else ''} {r['optimizer']}")
      if "error" in r:
        print(f"{head}: {r['error']}", flush=True)
        continue
      print(f"{head}: step {r['step_s']:.3f} s, {r['tokens_per_s']:.0f} tokens/s, "
            f"{r['tflops_per_device']:.0f} TFLOP/s/device, MFU {100 * r['mfu']:.1f}%, "
            f"temp {r['temp_gb']:.1f} GB + args {r['args_gb']:.1f} GB, compile "
            f"{r['compile_s']:.0f} s, build {r['build_s']:.0f} s", flush=True)


if __name__ == "__main__":
  sys.path.insert(0, ROOT)
  main()
