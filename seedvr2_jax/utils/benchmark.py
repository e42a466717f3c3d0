"""Timing helpers for the `experiments/` benchmarks (compile once, warm up, median of runs)."""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import statistics
import tempfile
import time

import jax

# Dense bf16 datasheet peak of an H100/H200; MFU in this project is reported against it.
PEAK_TFLOPS = 989.0


def time_jitted(fn, *args, warmup: int = 1, iters: int = 3) -> dict:
  """Compiles jax.jit(fn) for args, then times it. Returns seconds (median), seconds_min,
  compile_s (lower + compile) and temp_gb (XLA's temporary buffer size)."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  for _ in range(warmup):
    jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return dict(seconds=statistics.median(times), seconds_min=min(times), compile_s=compile_s,
              temp_gb=getattr(memory, "temp_size_in_bytes", 0) / 1e9)


def peak_memory_gb() -> float:
  """Peak bytes in use on the first device since the process started (0 where unsupported)."""
  return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0) / 1e9


def device_time_by_op(run, *, top: int = 15, trace_dir: str | None = None) -> dict[str, float]:
  """Runs `run()` (its outputs waited for) once under the JAX profiler; returns milliseconds of
  device (GPU/TPU) time per HLO op name without its numeric suffix (e.g.
  "cudnn-conv-bias-activation"), largest first (ops XLA groups into a CUDA graph appear as one
  "command_buffer" entry each). The trace stays in `trace_dir` (TensorBoard / Perfetto) when
  given."""
  with tempfile.TemporaryDirectory() as scratch:
    trace_dir = trace_dir or scratch
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      jax.block_until_ready(run())
    path = max(glob.glob(os.path.join(trace_dir, "plugins", "profile", "*",
                                      "perfetto_trace.json.gz")), key=os.path.getmtime)
    with gzip.open(path) as f:
      return op_times_from_trace(json.load(f)["traceEvents"], top)


def op_times_from_trace(events: list[dict], top: int) -> dict[str, float]:
  """Chrome-trace events -> {HLO op: total ms} over the processes named "/device:..."; on a
  trace without devices (the CPU backend) over the host's XLA ops."""
  processes = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name"}
  devices = ({pid for pid, name in processes.items() if name.startswith("/device:")}
             or set(processes))
  totals = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and e["pid"] in devices and "hlo_op" in e.get("args", {}):
      totals[re.sub(r"\.\d+$", "", e["args"]["hlo_op"])] += e["dur"] / 1e3
  return dict(totals.most_common(top))
