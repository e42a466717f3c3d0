"""`seedvr2-jax train`: build the run from its config, resume if the workdir has checkpoints,
train, log, checkpoint, stop cleanly on SIGTERM/preemption or a non-finite loss. The objective
(`config.objective`, train/objectives/) decides what is trained and how; everything here is the
same for all of them."""

from __future__ import annotations

import dataclasses
import math
import signal
import time

import jax
import ml_collections
from clu import parameter_overview
from flax import nnx

from seedvr2_jax.errors import ConfigError, SeedVR2Error
from seedvr2_jax.parallel import mesh as mesh_lib
from seedvr2_jax.parallel import sharding
from seedvr2_jax.train import checkpoint, metrics, objectives, start
from seedvr2_jax.train import state as state_lib
from seedvr2_jax.train import step as step_lib


class NonFiniteLoss(SeedVR2Error):
  """Training produced a non-finite loss or gradient; the last good state was saved."""


@dataclasses.dataclass
class Run:
  """What `build` makes from a config: the mesh, the built objective, a fresh sharded state
  and the frozen inputs of its step (abstract: jax.ShapeDtypeStructs with shardings)."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  objective: objectives.Objective
  state: state_lib.TrainState
  state_sharding: state_lib.TrainState
  frozen: dict
  frozen_sharding: dict


def build(config: ml_collections.ConfigDict, devices=None, *, abstract: bool = False) -> Run:
  """Mesh (over `devices`, default all), the objective's models and a fresh state. `abstract`:
  shapes only, nothing allocated (ahead-of-time compilation for other devices, train/aot.py)."""
  dcn = {axis: int(size) for axis, size in config.dcn_mesh.items() if int(size) != 1}
  mesh = mesh_lib.make_mesh(dict(config.mesh), dcn or None, devices)
  batch_shards = math.prod(mesh.shape[axis] for axis in mesh_lib.BATCH_AXES)
  if config.batch_size % (batch_shards * config.accum_steps):
    raise ConfigError(f"batch_size {config.batch_size} must be a multiple of accum_steps "
                      f"{config.accum_steps} x the {batch_shards} batch shards of the mesh "
                      f"(data x fsdp = {' x '.join(str(mesh.shape[a]) for a in mesh_lib.BATCH_AXES)}"
                      f" over {mesh.size} devices)")
  objective = objectives.make(config, mesh, abstract=abstract)
  frozen = objective.build()
  rep = sharding.replicated(mesh)
  frozen_sharding = jax.tree.map(lambda _: rep, frozen)
  frozen = start.put(frozen, frozen_sharding)
  extras, extras_sharding = objective.extras()
  trained = objective.trained
  txs = {name: t.tx for name, t in trained.items()}
  make = lambda params, extras: state_lib.create(
      params, txs, config.seed, ema=[name for name, t in trained.items() if t.ema],
      extras=extras)
  params = {name: t.model.params for name, t in trained.items()}
  abstract_state = jax.eval_shape(make, params, extras)
  state_sharding = state_lib.shardings(
      abstract_state, {name: t.model.params_sharding for name, t in trained.items()}, txs,
      extras_sharding, mesh)
  state = (start.put(abstract_state, state_sharding) if abstract
           else jax.jit(make, out_shardings=state_sharding)(params, extras))
  return Run(config, mesh, objective, state, state_sharding, frozen, frozen_sharding)


def make_step_fn(run: Run, phase=None):
  """The jitted step of the run's objective in `phase`."""
  config, mesh = run.config, run.mesh
  step = step_lib.make_step(run.objective, phase, ema_decay=config.ema_decay,
                            accum_steps=config.accum_steps)
  rules = start.rules_of(config)

  def step_on_mesh(*args):  # traced with the models' activations placed by the rules
    with sharding.activation_sharding(mesh, rules):
      return step(*args)

  batch_sharding = jax.sharding.NamedSharding(mesh, sharding.batch_spec(1))
  return step_lib.jit_step(step_on_mesh, run.state_sharding, batch_sharding, run.frozen_sharding,
                           sharding.replicated(mesh))


class _Stop:
  """Set by SIGTERM (preemption) in a one-process run: the loop saves and exits at the next step
  boundary. With several processes JAX's preemption service owns SIGTERM and every process
  learns of a notice to any of them at the same step (`Checkpointer.reached_preemption`)."""

  def __init__(self):
    self.requested = False
    self._previous = None
    if jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    self.requested = True

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def train(config: ml_collections.ConfigDict, workdir: str, data, *, stream=None) -> Run:
  """Runs `config` in `workdir` until `config.total_steps` (resuming from the newest
  checkpoint there). `data(run)` returns the batch iterator (train/data.py): `next()` gives
  global arrays, `get_state()`/`set_state()` its position, `metrics()` counters to log,
  `close()` stops its workers."""
  run = build(config)
  batches = data(run)  # its start-up errors (no data, bad buckets) come before any output
  stop = _Stop()
  writer = ckpt = None
  try:
    writer = metrics.MetricsWriter(workdir, jax.process_index() == 0, stream)
    ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints,
                                   every=config.checkpoint_every)
    _resume_or_start(run, ckpt, batches, writer, workdir)
    _loop(run, ckpt, batches, writer, stop, workdir)
  finally:
    stop.restore()
    if ckpt is not None:
      ckpt.wait()
      ckpt.close()
    if writer is not None:
      writer.close()
    batches.close()
  return run


def _resume_or_start(run: Run, ckpt, batches, writer, workdir: str) -> None:
  """Restores the newest checkpoint of `workdir` (state and data position), or logs the
  parameter tables of a fresh run."""
  start = ckpt.latest_step()
  if start is None:
    for name, params in run.state.params.items():
      writer.text(f"{name}:\n" + parameter_overview.get_parameter_overview(
          nnx.to_pure_dict(params), include_stats=False))
    return
  abstract = checkpoint.abstract_with_shardings(run.state, run.state_sharding)
  run.state, data_state = ckpt.restore(start, abstract)
  if data_state:
    try:
      batches.set_state(data_state)
    except (KeyError, TypeError, ValueError):
      raise ConfigError(f"{workdir}: the data position {data_state} saved at step {start} does "
                        f"not fit this run's data (another data config made it?)") from None
  writer.text(f"resumed from {workdir} at step {start}")


def _loop(run: Run, ckpt, batches, writer, stop: _Stop, workdir: str) -> None:
  """Steps until `config.total_steps`, a preemption or a non-finite loss. A step whose phase
  differs from the previous step's enters it first (decided by step numbers alone, so resumed
  and uninterrupted runs agree)."""
  config, objective = run.config, run.objective
  config_json = config.to_json_best_effort()
  step = int(run.state.step)
  compiled = {}
  window_start, window_steps = time.perf_counter(), 0
  while step < config.total_steps:
    phase = objective.phase(step)
    if step > 0 and phase != objective.phase(step - 1):
      run.state, message = objective.enter_phase(run.state, phase)
      writer.text(message)
    if phase not in compiled:
      compiled.clear()
      compiled[phase] = make_step_fn(run, phase)
    batch = next(batches)
    run.state, step_metrics = compiled[phase](run.state, batch, run.frozen)
    step += 1
    window_steps += 1
    if not bool(step_metrics["finite"]):
      ckpt.save(step - 1, run.state, batches.get_state(), config_json, force=True)
      ckpt.wait()
      raise NonFiniteLoss(f"non-finite loss or gradient at step {step} (loss "
                          f"{float(step_metrics['loss'])}); saved the last good state as "
                          f"step {step - 1} in {workdir}")
    if step % config.log_every == 0 or step == config.total_steps:
      elapsed = time.perf_counter() - window_start
      writer.write(step, {**{k: v for k, v in step_metrics.items() if k != "finite"},
                          **_throughput(run, batch, phase, window_steps, elapsed),
                          **batches.metrics()})
      window_start, window_steps = time.perf_counter(), 0
    preempted = stop.requested or ckpt.reached_preemption(step)
    ckpt.save(step, run.state, batches.get_state(), config_json,
              force=preempted or step == config.total_steps)
    if preempted:
      writer.text(f"stopping at step {step} (preemption); checkpoint saved")
      break


def _throughput(run: Run, batch: dict, phase, steps: int, seconds: float) -> dict:
  """step time, samples/s, tokens/s, TFLOP/s per device and MFU (vs config.peak_tflops)."""
  work = run.objective.throughput(batch, phase)
  step_s = seconds / max(steps, 1)
  tflops = work.flops / step_s / 1e12 / run.mesh.size
  return {"step_s": step_s, "samples_per_s": work.samples / step_s,
          "tokens_per_s": work.tokens / step_s, "tflops_per_device": tflops,
          "mfu": tflops / run.config.peak_tflops}
