"""Multi-process training on one machine: two processes with two CPU devices each (gloo
collectives) against one process with four, through `seedvr2-jax train --distributed`."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.py")
# Same global batch on 4 devices however many processes hold them; every host indexes all clips
# (data.shard_sources=False), so a batch depends on (seed, step) alone.
COMMON = ("--config.batch_size=4", "--config.log_every=1", "--config.data.shard_sources=False")
# Two blocks (one separate-weights MM block, the video-only last block): every kind of DiT
# parameter at half the tiny model's compile time.
TWO_BLOCKS = ("--config.model.num_layers=2", "--config.model.mm_layers=1")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int, **extra) -> dict:
  # No persistent compilation cache: JAX writes it from process 0 only, so the processes of a
  # relaunch need not find the same programs there, and one that compiles while the other loads
  # leaves the other waiting at its first collective past Gloo's fixed 30 s; without the cache
  # both processes compile alike.
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
              JAX_ENABLE_COMPILATION_CACHE="false",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra)


def _train(config: str, workdir, steps: int, *extra: str) -> list[str]:
  return [sys.executable, "-m", "seedvr2_jax.cli", "train", "--config", config, "--workdir",
          str(workdir), f"--config.total_steps={steps}", *COMMON, *TWO_BLOCKS, *extra]


def _two_processes(config, workdir, steps, *extra, slurm: bool = False) -> list:
  """Starts the two processes (explicit flags, or SLURM's variables); returns their Popens."""
  port = _free_port()
  procs = []
  for i in range(2):
    if slurm:  # JAX's SLURM detection: coordinator port from the job id, node 0 from the list
      env = _env(2, SLURM_JOB_ID=str(port - 61440), SLURM_STEP_NODELIST="localhost",
                 SLURM_NTASKS="2", SLURM_PROCID=str(i), SLURM_LOCALID=str(i),
                 SLURM_STEP_NUM_NODES="1")
      flags = ("--distributed",)
    else:
      env = _env(2)
      flags = ("--distributed", "--coordinator-address", f"127.0.0.1:{port}",
               "--num-processes", "2", "--process-id", str(i))
    log = open(f"{workdir}.process{i}.log", "w")
    procs.append(subprocess.Popen(_train(config, workdir, steps, *flags, *extra), env=env,
                                  cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
  return procs


def _wait(procs, workdir, timeout=600) -> None:
  for i, p in enumerate(procs):
    assert p.wait(timeout=timeout) == 0, open(f"{workdir}.process{i}.log").read()[-3000:]


def _logged(workdir) -> dict[int, dict]:
  return {r["step"]: r for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))}


def _assert_same_losses(a: dict, b: dict, names=("loss", "grad_norm"), rtol=1e-6) -> None:
  # 2 x 2 devices and 1 x 4 run the same program; only the order of the cross-device sums may
  # differ (gloo against in-process collectives): diffusion within 1e-7 relative
  # (measured over 10 steps of the four-block tiny model).
  assert sorted(a) == sorted(b)
  for step in a:
    for name in names:
      np.testing.assert_allclose(a[step][name], b[step][name], rtol=rtol, err_msg=(step, name))


def test_two_processes_train_preempt_and_resume_like_one(tmp_path):
  """Explicit --coordinator-address/--num-processes/--process-id: SIGTERM to process 1 stops
  both at one step with a collective checkpoint; a second launch resumes on both and ends where
  one process with all four devices ends, step for step."""
  one = subprocess.run(_train(TINY, tmp_path / "one", 6), env=_env(4), cwd=ROOT,
                       capture_output=True, text=True)
  assert one.returncode == 0, one.stderr[-3000:]
  two = tmp_path / "two"
  procs = _two_processes(TINY, two, 6)
  deadline = time.monotonic() + 600
  while not os.path.exists(two / "metrics.jsonl") and time.monotonic() < deadline:
    time.sleep(0.5)
  procs[1].send_signal(signal.SIGTERM)  # a preemption notice to one host only
  _wait(procs, two)
  stopped = sorted(os.listdir(two / "checkpoints"))
  assert len(stopped) == 1 and 0 < int(stopped[0]) < 6, stopped
  log0 = open(f"{two}.process0.log").read()
  assert f"stopping at step {stopped[0]} (preemption)" in log0
  _wait(_two_processes(TINY, two, 6), two)
  assert f"resumed from {two} at step {stopped[0]}" in open(f"{two}.process0.log").read()
  assert not os.path.exists(f"{two}/metrics.jsonl.1")
  _assert_same_losses(_logged(two), _logged(tmp_path / "one"))


def test_apt_under_two_slurm_processes_equals_one_process(tmp_path):
  """SLURM's variables (no flags): two processes run the G + D step like one process."""
  apt = f"{TINY}:apt"
  one = subprocess.run(_train(apt, tmp_path / "one", 3), env=_env(4), cwd=ROOT,
                       capture_output=True, text=True)
  assert one.returncode == 0, one.stderr[-3000:]
  _wait(_two_processes(apt, tmp_path / "two", 3, slurm=True), tmp_path / "two")
  # The D loss averages softplus of logit differences, each logit a cross-device sum: 1.7e-6
  # relative measured at step 3.
  _assert_same_losses(_logged(tmp_path / "two"), _logged(tmp_path / "one"),
                      ("loss", "d/loss", "grad_norm", "d/grad_norm"), rtol=1e-5)


@pytest.mark.parametrize("argv,message", [
    (("--config.batch_size=2",), "batch_size 2 must be a multiple"),
    (("--config.mesh.data=3",), "needs 3 devices, 4 available"),
    (("--distributed",), "no launcher detected"),
    (("--distributed", "--coordinator-address", "127.0.0.1:9", "--num-processes", "2",
      "--process-id", "1", "--distributed-timeout", "2"), "could not reach the coordinator"),
])
def test_multi_process_errors_are_one_line(tmp_path, argv, message):
  cmd = [sys.executable, "-m", "seedvr2_jax.cli", "train", "--config", TINY, "--workdir",
         str(tmp_path / "w"), *argv]
  proc = subprocess.run(cmd, env=_env(4), cwd=ROOT, capture_output=True, text=True)
  err = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(err) == 1 and message in err[0], proc.stderr[-2000:]
  assert not os.path.exists(tmp_path / "w")
