"""Multi-process start-up: one process per host (or per GPU), joined through JAX's coordination
service before anything touches a backend. Process 0 serves the coordination service and waits
(up to the timeout) for the others to register; every other process first waits for it to
accept connections, so a coordinator that never comes is a one-line error, not an abort.

`initialize()` with no arguments lets JAX detect the launcher from the environment (SLURM, Open
MPI, Cloud TPU, Kubernetes, ...); explicit coordinator / process count / process id serve any
other launcher. On CPU the cross-process collectives are gloo's. All processes then see every
device of the job (`jax.devices()`) and drive their own (`jax.local_devices()`).
"""

from __future__ import annotations

import socket
import time

import jax
from jax._src import clusters

from seedvr2_jax.errors import DistributedError


def _detected(coordinator_address, num_processes, process_id, timeout_s):
  """(coordinator, process count, process id) as jax.distributed.initialize will resolve them
  (given values, else the detected launcher's)."""
  address, count, index, _ = clusters.ClusterEnv.auto_detect_unset_distributed_params(
      coordinator_address, num_processes, process_id, None, None, timeout_s)
  if None in (address, count, index):
    raise DistributedError("cannot start a multi-process run: no launcher detected (SLURM, Open "
                           "MPI, a TPU pod, Kubernetes); pass --coordinator-address, "
                           "--num-processes and --process-id")
  return address, count, index


def _wait_for_coordinator(address: str, process_id: int, timeout_s: int) -> None:
  """Waits until process 0's coordination service accepts connections (it may start later);
  the coordination client would abort the process instead of raising."""
  host, port = address.rsplit(":", 1)
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
        return
    except OSError as e:
      if time.monotonic() > deadline:
        raise DistributedError(f"process {process_id} could not reach the coordinator at "
                               f"{address} within {timeout_s} s ({e})") from None
      time.sleep(0.5)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout_s: int = 300) -> None:
  """Joins this process to the job; a DistributedError (one line) when that fails within
  `timeout_s` seconds or no launcher is detected and none is given."""
  given = [v is not None for v in (coordinator_address, num_processes, process_id)]
  if any(given) and not all(given):
    raise DistributedError("give all of --coordinator-address, --num-processes and "
                           "--process-id, or none (launcher detected from the environment)")
  if coordinator_address is not None and ":" not in coordinator_address:
    raise DistributedError(f"--coordinator-address {coordinator_address!r} must be HOST:PORT")
  address, count, index = _detected(coordinator_address, num_processes, process_id, timeout_s)
  if not 0 <= index < count:
    raise DistributedError(f"process id {index} is not in 0 .. {count - 1}")
  if index:
    _wait_for_coordinator(address, index, timeout_s)
  # Cross-process collectives of CPU devices (tests, CPU pods); GPUs and TPUs use their own.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=timeout_s)
  except (ValueError, TypeError, RuntimeError) as e:
    raise DistributedError(f"cannot start a multi-process run: {e}") from None
