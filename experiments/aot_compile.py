"""Compiles a config's training step for a TPU pod slice on this (CPU-only) host and prints per-chip
memory, FLOPs, the expected step time and the collectives (seedvr2_jax/train/aot.py; needs the
tpu extra: pip install -c requirements/lock.txt -e '.[tpu]'). docs/scaling.md has the results.

  python experiments/aot_compile.py --topology v5p:4x4x4 --config configs/train_7b.py \
      --config.mesh.fsdp=-1 --config.batch_size=64
  python experiments/aot_compile.py --topology v5p:4x4x4 --config configs/train_3b.py:apt ...
  python experiments/aot_compile.py --topology v5p:4x4x4 --slices 2 --config.dcn_mesh.data=2 ...

`--config.FIELD=VALUE` overrides as for `seedvr2-jax train`; `--clip FxHxW` sets the clip
(default: the config's largest bucket); `--step N` compiles the phase of step N (distillation
rounds); `--json F` writes the report. A step that does not fit the chip fails to compile:
exit 1 with the compiler's line. Bad input: one line, exit 2.
"""

import argparse
import dataclasses
import json
import os
import sys


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, help="config file, e.g. configs/train_7b.py")
  parser.add_argument("--topology", required=True, help="v5p:4x4x4, v6e:16x16, v5e:8x8, cpu:N")
  parser.add_argument("--slices", type=int, default=1, help="slices (multi-slice over DCN)")
  parser.add_argument("--clip", default=None, help="FxHxW pixels (default: largest bucket)")
  parser.add_argument("--step", type=int, default=0, help="compile the phase of this step")
  parser.add_argument("--mfu", type=float, default=0.4, help="MFU of the step-time estimate")
  parser.add_argument("--json", default=None, help="write the report here")
  args, overrides = parser.parse_known_args(argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host compiles; TPUs come from libtpu
  # Compile-only: no TPU is opened, so other processes may hold libtpu at the same time.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  version, _, count = args.topology.partition(":")
  if version == "cpu" and count.isdigit() and int(count) > 0:
    import jax
    jax.config.update("jax_num_cpu_devices", int(count))  # before anything starts the backend
  from seedvr2_jax import config_lib
  from seedvr2_jax.errors import SeedVR2Error
  from seedvr2_jax.train import aot
  try:
    clip = tuple(int(x) for x in args.clip.split("x")) if args.clip else None
    if clip is not None and len(clip) != 3:
      raise ValueError
  except ValueError:
    print(f"aot_compile: error: --clip: expected FxHxW, got {args.clip!r}", file=sys.stderr)
    return 2
  try:
    config = config_lib.load_with_overrides(args.config, overrides)
    target = aot.target(args.topology, args.slices)
    report, _ = aot.compile_step(config, target, clip=clip, step=args.step)
  except aot.CompileError as e:
    print(f"aot_compile: does not compile: {e}", file=sys.stderr)
    return 1
  except SeedVR2Error as e:
    print(f"aot_compile: error: {e}", file=sys.stderr)
    return 2
  print("\n".join(report.lines(args.mfu)))
  if args.json:
    with open(args.json, "w") as f:
      json.dump({**dataclasses.asdict(report), "total_bytes": report.total_bytes,
                 "step_s": report.step_s(args.mfu), "mfu": args.mfu}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
