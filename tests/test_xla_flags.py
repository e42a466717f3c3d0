"""The GPU XLA flags of training: merged under the user's own XLA_FLAGS, applied only where JAX
runs on CUDA, and every one known to the installed XLA."""

import os
import subprocess
import sys

from seedvr2_jax.utils import xla_flags


def test_user_flags_win_and_ours_fill_in():
  flags = xla_flags.merged("--xla_gpu_enable_triton_gemm=true --xla_dump_to=/tmp/d")
  assert "--xla_gpu_enable_triton_gemm=false" not in flags
  assert flags.endswith("--xla_gpu_enable_triton_gemm=true --xla_dump_to=/tmp/d")
  assert flags.count("--") == len(xla_flags.GPU_FLAGS) + 1
  assert "--xla_gpu_enable_latency_hiding_scheduler=true" in flags
  assert xla_flags.merged("").split() == [f"--{k}={v}" for k, v in xla_flags.GPU_FLAGS]


def test_flags_are_left_out_off_cuda():
  environ = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_dump_to=/tmp/d"}
  assert not xla_flags.apply_gpu_flags(environ)
  assert not xla_flags.apply_profile_flags(environ)
  assert environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/d"


def _starts_jax(xla_flags_value: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags_value)
  code = "import jax.numpy as jnp; jnp.ones(2).block_until_ready()"
  return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_every_flag_is_known_to_the_installed_xla():
  """XLA aborts at start-up on a flag it does not know (e.g. one removed in a new jaxlib); the
  GPU flags are parsed on every backend, so the CPU catches them."""
  proc = _starts_jax(xla_flags.merged(""))
  assert proc.returncode == 0, proc.stderr[-2000:]
  proc = _starts_jax(xla_flags.merged("", xla_flags.PROFILE_FLAGS))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert _starts_jax(xla_flags.merged("--xla_gpu_no_such_flag=true")).returncode != 0
