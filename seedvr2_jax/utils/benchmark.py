"""Timing helpers for the `experiments/` benchmarks (compile once, warm up, median of runs)."""

from __future__ import annotations

import statistics
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
