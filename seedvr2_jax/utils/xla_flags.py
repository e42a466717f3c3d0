"""XLA flags for training on NVIDIA GPUs, in one place (why each is set: docs/scaling.md, "XLA
flags on GPUs"). They follow the flags MaxText's and NVIDIA JAX-Toolbox's GPU recipes set for
FSDP training: overlap collectives with compute (latency-hiding scheduler, a high-priority
stream for collectives, collectives of the next `lax.scan` iteration started in the current
one), combine small collectives, and leave matmuls to cuBLAS.

`apply_gpu_flags` must run before anything starts a JAX backend (XLA reads XLA_FLAGS once);
flags the user's own XLA_FLAGS sets keep the user's value.
"""

from __future__ import annotations

import importlib.metadata
import os
import pkgutil

GPU_FLAGS = (
    ("xla_gpu_enable_latency_hiding_scheduler", "true"),
    ("xla_gpu_enable_highest_priority_async_stream", "true"),
    ("xla_gpu_enable_pipelined_all_gather", "true"),
    ("xla_gpu_enable_pipelined_reduce_scatter", "true"),
    ("xla_gpu_enable_pipelined_all_reduce", "true"),
    ("xla_gpu_enable_while_loop_double_buffering", "true"),
    ("xla_gpu_all_gather_combine_threshold_bytes", "134217728"),
    ("xla_gpu_reduce_scatter_combine_threshold_bytes", "67108864"),
    ("xla_gpu_all_reduce_combine_threshold_bytes", "134217728"),
    ("xla_gpu_enable_all_gather_combine_by_dim", "false"),
    ("xla_gpu_enable_reduce_scatter_combine_by_dim", "false"),
    ("xla_gpu_enable_triton_gemm", "false"),
)


def merged(user_flags: str, defaults=GPU_FLAGS) -> str:
  """`defaults` as --name=value, except the names `user_flags` sets, followed by `user_flags`."""
  given = {flag.lstrip("-").split("=", 1)[0] for flag in user_flags.split()}
  ours = [f"--{name}={value}" for name, value in defaults if name not in given]
  return " ".join([*ours, *user_flags.split()])


def cuda_requested(environ=os.environ) -> bool:
  """Whether JAX will run on NVIDIA GPUs: a CUDA PJRT plugin is installed and JAX_PLATFORMS
  (when set) allows it."""
  platforms = environ.get("JAX_PLATFORMS", "")
  if platforms and not {"cuda", "gpu"} & set(platforms.split(",")):
    return False
  names = {e.name for e in importlib.metadata.entry_points(group="jax_plugins")}
  try:
    import jax_plugins  # the namespace package of installed PJRT plugins
    names |= {m.name for m in pkgutil.iter_modules(jax_plugins.__path__)}
  except ImportError:
    pass
  return any(name.startswith("xla_cuda") for name in names)


def apply_gpu_flags(environ=os.environ) -> bool:
  """Puts `GPU_FLAGS` into environ["XLA_FLAGS"] (the user's own flags win) when JAX will run on
  NVIDIA GPUs; returns whether it did."""
  if not cuda_requested(environ):
    return False
  environ["XLA_FLAGS"] = merged(environ.get("XLA_FLAGS", ""))
  return True


# For a per-op profile: no CUDA graphs, which show a program's kernels as "command_buffer" ops.
PROFILE_FLAGS = (("xla_gpu_enable_command_buffer", ""),)


def apply_profile_flags(environ=os.environ) -> bool:
  """Puts `PROFILE_FLAGS` into environ["XLA_FLAGS"] when JAX will run on NVIDIA GPUs, so a trace
  names each op; returns whether it did."""
  if not cuda_requested(environ):
    return False
  environ["XLA_FLAGS"] = merged(environ.get("XLA_FLAGS", ""), PROFILE_FLAGS)
  return True
