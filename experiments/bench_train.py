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
  python experiments/bench_train.py --mu-dtype bfloat16                # AdamW's mu in bf16
  python experiments/bench_train.py --no-gpu-flags                     # XLA's default flags
  python experiments/bench_train.py --profile /tmp/prof                # + trace, time per op

Each run (its own process) builds `configs/train_3b.py`-style state with FSDP over the given
number of devices (batch = 1 sample per device); then, for each --remat policy in turn, compiles
the step, runs --warmup steps and times --steps steps (memory: the compiled step's temporaries
and arguments; a policy that runs out of memory is reported and skipped). Model FLOPs per
step = 3 x the DiT forward (6 x params x tokens for the linear layers plus attention), per
`models/dit/flops.py`, and 19 x for APT (the objective's `throughput`); MFU against 989 TFLOP/s
per device. For APT, --remat applies to the generator; the discriminator uses
`config.apt.d_remat` (full). The GPU XLA flags of `seedvr2_jax/utils/xla_flags.py` are set (as
`train` sets them) unless --no-gpu-flags. --profile DIR: after the timed steps, one more step
runs under the JAX profiler (trace in DIR/VARIANT_xDEVICES_REMAT, for TensorBoard or Perfetto)
and its device time per HLO op is printed (on CPU: the host's XLA ops; on CUDA the run has
XLA's command buffers off, else a step is one CUDA graph).
"""

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LATENT_720P_21 = (6, 90, 160)  # 21 frames -> 6 latent frames; 720x1280 -> 90x160


def with_remat(run, remat: str, remat_names):
  """The run with another remat policy for the DiT: same state, a new graph definition."""
  from flax import nnx

  from seedvr2_jax.models.dit.nadit import NaDiT
  from seedvr2_jax.train import state as state_lib
  objective = run.objective
  objective.dit_cfg = dataclasses.replace(objective.dit_cfg, remat=remat,
                                          remat_names=tuple(remat_names))
  objective.dit.graphdef = state_lib.split_model(
      nnx.eval_shape(lambda: NaDiT(objective.dit_cfg, nnx.Rngs(0))))[0]
  return run


def run_one(variant: str, devices: int, args) -> Iterator[dict]:
  """One build, then each remat policy of --remat in turn (the state carries over); yields
  each row when it finishes, so a run cut short keeps the rows before."""
  import jax

  from seedvr2_jax import config_lib
  from seedvr2_jax.train import data, loop
  from seedvr2_jax.utils.benchmark import PEAK_TFLOPS, device_time_by_op, peak_memory_gb

  name = "tiny.py" if variant == "tiny" else f"train_{variant}.py"  # tiny: a CPU smoke test
  config = config_lib.load_config(os.path.join(ROOT, "configs", name))
  latent = tuple(args.latent) or ((2, 8, 8) if variant == "tiny" else LATENT_720P_21)
  config.objective = args.objective
  config.apt.d_sequential = args.d_sequential
  config.optim.name = config.d_optim.name = args.optimizer
  config.optim.mu_dtype = config.d_optim.mu_dtype = args.mu_dtype
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
  state = run.state
  for remat in args.remat:
    run = with_remat(run, remat, args.remat_names)
    result = dict(variant=variant, objective=args.objective, scan_layers=args.scan_layers,
                  d_sequential=args.d_sequential, optimizer=args.optimizer, latent=latent,
                  mu_dtype=args.mu_dtype, xla_flags=os.environ.get("XLA_FLAGS", ""),
                  remat_names=args.remat_names if remat == "names" else [],
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
      if args.profile:
        def profiled_step():
          nonlocal state
          state, _ = compiled(state, batch, run.frozen)
          return state
        result["op_ms"] = device_time_by_op(profiled_step, top=args.profile_top, trace_dir=(
            os.path.join(args.profile, f"{variant}_x{devices}_{remat}")))
    except Exception as e:  # out of memory for this policy: report it, try the next
      result["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
      yield result
      continue
    step_s = statistics.median(times)
    tflops = flops / step_s / 1e12 / devices
    result.update(step_s=step_s, step_s_min=min(times), tokens_per_s=tokens / step_s,
                  tflops_per_device=tflops, mfu=tflops / PEAK_TFLOPS,
                  loss=float(metrics["loss"]), peak_gb_so_far=peak_memory_gb())
    yield result


def main():
  from seedvr2_jax.models.dit.config import CHECKPOINT_NAMES, REMAT_POLICIES
  from seedvr2_jax.utils import xla_flags
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
  parser.add_argument("--remat-names", nargs="+", default=list(CHECKPOINT_NAMES),
                      choices=CHECKPOINT_NAMES, help="activations --remat names saves")
  parser.add_argument("--mu-dtype", default="float32", choices=["float32", "bfloat16"],
                      help="AdamW's first moment dtype (optim.mu_dtype)")
  parser.add_argument("--no-gpu-flags", action="store_true",
                      help="leave out the GPU XLA flags (seedvr2_jax/utils/xla_flags.py)")
  parser.add_argument("--profile", metavar="DIR",
                      help="trace one more step per policy into DIR; print device time per op")
  parser.add_argument("--profile-top", type=int, default=20, help="ops in the --profile table")
  parser.add_argument("--ema", type=float, default=0.0, help="EMA decay (0: no EMA copy)")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--out", help="append JSON lines here")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    variant, devices = args.runs[0].split(":")
    for r in run_one(variant, int(devices), args):
      print(json.dumps(r), flush=True)  # each row as it finishes
    return
  if not args.no_gpu_flags:
    xla_flags.apply_gpu_flags()  # the children inherit XLA_FLAGS
  if args.profile:  # its timed steps run without CUDA graphs too (xla_flags is in the JSON)
    xla_flags.apply_profile_flags()
  for spec in args.runs:
    cmd = [sys.executable, __file__, "--child", "--runs", spec, "--remat", *args.remat,
           "--remat-names", *args.remat_names, "--mu-dtype", args.mu_dtype,
           *(["--profile", args.profile, "--profile-top", str(args.profile_top)]
             if args.profile else []),
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
              f"{' d-sequential' if r['d_sequential'] else ''} {r['optimizer']}"
              f"{' mu ' + r['mu_dtype'] if r['mu_dtype'] != 'float32' else ''}"
              f"{'' if r['xla_flags'] else ' no-xla-flags'}")
      if "error" in r:
        print(f"{head}: {r['error']}", flush=True)
        continue
      print(f"{head}: step {r['step_s']:.3f} s, {r['tokens_per_s']:.0f} tokens/s, "
            f"{r['tflops_per_device']:.0f} TFLOP/s/device, MFU {100 * r['mfu']:.1f}%, "
            f"temp {r['temp_gb']:.1f} GB + args {r['args_gb']:.1f} GB, compile "
            f"{r['compile_s']:.0f} s, build {r['build_s']:.0f} s", flush=True)
      for op, ms in r.get("op_ms", {}).items():
        print(f"  {ms:9.2f} ms  {op}", flush=True)


if __name__ == "__main__":
  sys.path.insert(0, ROOT)
  main()
