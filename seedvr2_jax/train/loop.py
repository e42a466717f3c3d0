"""`seedvr2-jax train`: build the run from its config, resume if the workdir has checkpoints,
train, log, checkpoint, stop cleanly on SIGTERM/preemption or a non-finite loss.

Objectives (`config.objective`):
  diffusion  flow-matching training of the DiT (SeedVR pre-training / fine-tuning)
  distill    progressive distillation: rounds of `distill.steps_per_round` steps; round r has a
             student of teacher_steps / 2^(r+1) steps; at each round's end the student becomes
             the teacher. Teacher guidance `distill.first_round_guidance` in round 0, then 1.
  apt        adversarial post-training of the one-step generator against a discriminator made
             from it (train/apt.py): the state also holds D's parameters and optimizer.
  regression L1 of the one-step generator's x0 against the HQ latent (losses/regression.py)
"""

from __future__ import annotations

import dataclasses
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from seedvr2_jax.convert import bundle as bundle_lib
from seedvr2_jax.errors import ConfigError, SeedVR2Error
from seedvr2_jax.losses import distillation, flow_matching, regression
from seedvr2_jax.models.dit import config as dit_config
from seedvr2_jax.models.dit.flops import forward_flops
from seedvr2_jax.models.dit.nadit import NaDiT
from seedvr2_jax.models.discriminator import Discriminator
from seedvr2_jax.models.vae import config as vae_config
from seedvr2_jax.models.vae import autoencoder
from seedvr2_jax.parallel import mesh as mesh_lib
from seedvr2_jax.parallel import sharding
from seedvr2_jax.train import apt, checkpoint, latents, metrics, optim
from seedvr2_jax.train import state as state_lib
from seedvr2_jax.train import step as step_lib

OBJECTIVES = ("diffusion", "distill", "apt", "regression")


class NonFiniteLoss(SeedVR2Error):
  """Training produced a non-finite loss or gradient; the last good state was saved."""


@dataclasses.dataclass
class DiscriminatorParts:
  """The APT discriminator's graph, non-trained state and optimizer (its parameters live in
  the train state)."""

  graphdef: object
  rest: object
  tx: object


@dataclasses.dataclass
class Run:
  """What `build` makes from a config: models, mesh, shardings, the state and its step."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  dit_cfg: dit_config.NaDiTConfig
  graphdef: object
  rest: object
  vae_graphdef: object
  frozen: dict
  tx: object
  state: state_lib.TrainState | apt.APTState
  state_sharding: state_lib.TrainState | apt.APTState
  frozen_sharding: dict
  discriminator: DiscriminatorParts | None = None  # APT only


def dit_config_from(config: ml_collections.ConfigDict) -> dit_config.NaDiTConfig:
  model = dict(config.model)
  return dit_config.official(model.pop("variant"), **model)


def distill_round(config, step: int) -> tuple[int, int, float]:
  """(round index, student steps, teacher guidance) at `step`."""
  d = config.distill
  r = min(step // d.steps_per_round, d.rounds - 1)
  student = d.teacher_steps // 2 ** (r + 1)
  if student < 1:
    raise ConfigError(f"distill: {d.rounds} rounds from {d.teacher_steps} teacher steps go "
                      f"below one student step")
  return r, student, d.first_round_guidance if r == 0 else 1.0


def _initial_params(config, cfg, mesh, abstract_params, abstract_rest, params_sharding):
  """DiT parameters (float32, sharded) from a converted checkpoint or a fresh init, and the
  frozen VAE and text embeddings."""
  rest_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), abstract_rest)
  vae_cfg = vae_config.VAEConfig(**dict(config.vae))
  if config.init.checkpoint:
    bundle = bundle_lib.load(config.init.checkpoint, param_dtype="float32",
                             dtype=config.model.dtype)
    if dataclasses.replace(bundle.dit_cfg, **_numerics(cfg)) != cfg:
      raise ConfigError(f"{config.init.checkpoint}: its DiT config differs from config.model")
    numerics = dict(param_dtype=vae_cfg.param_dtype, dtype=vae_cfg.dtype)
    if dataclasses.replace(bundle.vae_cfg, **numerics) != vae_cfg:
      raise ConfigError(f"{config.init.checkpoint}: its VAE config differs from config.vae")
    model = nnx.merge(nnx.split(nnx.eval_shape(lambda: NaDiT(cfg, nnx.Rngs(0))))[0],
                      bundle.dit_state)
    _, params, rest = state_lib.split_model(model)
    params = jax.device_put(params, params_sharding)
    rest = jax.device_put(rest, rest_sharding)
    vae_state, txt_pos, txt_neg = bundle.vae_state, bundle.pos_emb, bundle.neg_emb
  else:
    params, rest = state_lib.random_split(cfg, config.seed, params_sharding, rest_sharding)
    vae_state = nnx.split(autoencoder.random_init(vae_cfg, config.seed + 1))[1]
    keys = jax.random.split(jax.random.key(config.seed + 2))
    txt_pos = jax.random.normal(keys[0], (config.text.pos_length, cfg.txt_in_dim))
    txt_neg = jax.random.normal(keys[1], (config.text.neg_length, cfg.txt_in_dim))
  return params, rest, vae_state, txt_pos, txt_neg


def _numerics(cfg):
  return {k: getattr(cfg, k) for k in ("param_dtype", "dtype", "attention_backend",
                                       "round_qkv_bf16", "remat", "scan_layers")}


def build(config: ml_collections.ConfigDict, devices=None) -> Run:
  """Mesh (over `devices`, default all), models, optimizer and a fresh sharded train state."""
  if config.objective not in OBJECTIVES:
    raise ConfigError(f"unknown objective {config.objective!r}; expected one of {OBJECTIVES}")
  mesh = mesh_lib.make_mesh(dict(config.mesh), dict(config.dcn_mesh) if config.dcn_mesh
                            else None, devices)
  cfg = dit_config_from(config)
  graphdef, abstract_params, abstract_rest = state_lib.split_model(
      nnx.eval_shape(lambda: NaDiT(cfg, nnx.Rngs(0))))
  params_sharding = sharding.state_shardings(abstract_params, mesh,
                                             tuple(map(tuple, config.sharding_rules)))
  params, rest, vae_state, txt_pos, txt_neg = _initial_params(
      config, cfg, mesh, abstract_params, abstract_rest, params_sharding)
  vae_graphdef = nnx.split(nnx.eval_shape(lambda: autoencoder.VideoAutoencoder(
      vae_config.VAEConfig(**dict(config.vae)), nnx.Rngs(0))))[0]
  rep = sharding.replicated(mesh)
  frozen = jax.device_put(latents.frozen_inputs(vae_state, txt_pos, txt_neg), rep)
  frozen_sharding = jax.tree.map(lambda _: rep, frozen)
  tx = optim.make(config.optim, config.total_steps)
  if config.objective == "apt":
    return _build_apt(config, mesh, cfg, graphdef, params, rest, params_sharding, vae_graphdef,
                      frozen, frozen_sharding, tx)
  distill = config.objective == "distill"
  make = lambda p: state_lib.create(p, tx, config.seed, ema=config.ema_decay > 0,
                                    teacher=jax.tree.map(jnp.copy, p) if distill else None)
  state_sharding = state_lib.shardings(jax.eval_shape(make, params), params_sharding, tx, mesh)
  state = jax.jit(make, out_shardings=state_sharding)(params)
  return Run(config, mesh, cfg, graphdef, rest, vae_graphdef, frozen, tx, state, state_sharding,
             frozen_sharding)


def _build_apt(config, mesh, cfg, graphdef, params, rest, params_sharding, vae_graphdef, frozen,
               frozen_sharding, tx) -> Run:
  """The APT run: a discriminator initialised from the generator's current weights."""
  generator = nnx.merge(graphdef, params, rest)
  disc = Discriminator.from_generator(generator, tuple(config.apt.head_layers) or None,
                                      rngs=nnx.Rngs(config.seed + 3),
                                      remat=config.apt.d_remat)
  d_graphdef, d_params, d_rest = state_lib.split_model(disc)
  rules = tuple(map(tuple, config.sharding_rules))
  d_params_sharding = sharding.state_shardings(d_params, mesh, rules)
  d_params = jax.device_put(d_params, d_params_sharding)
  d_rest = jax.device_put(d_rest, jax.tree.map(lambda _: sharding.replicated(mesh), d_rest))
  d_tx = optim.make(config.d_optim, config.total_steps)
  make = lambda p, d: apt.create(p, d, tx, d_tx, config.seed, ema=config.ema_decay > 0)
  state_sharding = apt.shardings(jax.eval_shape(make, params, d_params), params_sharding,
                                 d_params_sharding, tx, d_tx, mesh)
  state = jax.jit(make, out_shardings=state_sharding)(params, d_params)
  return Run(config, mesh, cfg, graphdef, rest, vae_graphdef, frozen, tx, state, state_sharding,
             frozen_sharding, DiscriminatorParts(d_graphdef, d_rest, d_tx))


def make_step_fn(run: Run, student_steps: int | None = None, guidance: float = 1.0):
  """The jitted step for the run's objective (distillation: for one round's student steps)."""
  config, mesh = run.config, run.mesh
  latent_spec = sharding.batch_spec(5, sequence_axis=3 if mesh.shape["sequence"] > 1 else None)
  constrain = lambda x: jax.lax.with_sharding_constraint(
      x, jax.sharding.NamedSharding(mesh, latent_spec))
  prepare = latents.make_prepare(run.vae_graphdef, encode_chunk=config.encode_chunk,
                                 constrain=constrain)
  learning_rate = optim.learning_rate(config.optim, config.total_steps)
  if config.objective == "apt":
    if config.accum_steps != 1:
      raise ConfigError("apt: gradient accumulation is not supported (accum_steps must be 1)")
    d = run.discriminator
    apt_cfg = apt.APTConfig(**{k: v for k, v in config.apt.items()
                               if k not in ("head_layers", "d_remat")})
    step = apt.make_step(run.graphdef, run.rest, d.graphdef, d.rest, run.tx, d.tx, prepare,
                         apt_cfg, ema_decay=config.ema_decay, learning_rate=learning_rate)
  else:
    if config.objective == "diffusion":
      loss_cfg = flow_matching.DiffusionLossConfig(**dict(config.diffusion))
      loss_fn = lambda model, teacher, batch, key: flow_matching.diffusion_loss(
          model, batch, key, loss_cfg)
    elif config.objective == "regression":
      loss_fn = lambda model, teacher, batch, key: regression.one_step_l1_loss(model, batch, key)
    else:
      d_cfg = distillation.DistillConfig(student_steps, guidance,
                                         config.diffusion.resolution_shift)
      loss_fn = lambda model, teacher, batch, key: distillation.distillation_loss(
          model, teacher, batch, key, d_cfg)
    step = step_lib.make_step(run.graphdef, run.rest, run.tx, loss_fn, prepare,
                              ema_decay=config.ema_decay, accum_steps=config.accum_steps,
                              learning_rate=learning_rate)
  batch_sharding = jax.sharding.NamedSharding(mesh, sharding.batch_spec(1))
  return step_lib.jit_step(step, run.state_sharding, batch_sharding, run.frozen_sharding,
                           sharding.replicated(mesh))


def step_flops(run: Run, latent_shape) -> float:
  """Model FLOPs of one step: 3 x forward (+ teacher forwards when distilling), per batch."""
  fwd = forward_flops(run.dit_cfg, tuple(latent_shape[1:4]),
                      int(run.frozen["txt_pos"].shape[0]))["total"]
  if run.config.objective == "apt":
    # G: forward + backward (3); D in the G step: 2 samples forward, backward on one (4);
    # D step: 4 samples forward + backward (12). D counted as a full trunk forward.
    return (3 + 4 + 12) * fwd * latent_shape[0]
  teacher = 0
  if run.config.objective == "distill":
    guidance = distill_round(run.config, int(run.state.step))[2]
    teacher = 2 * (2 if guidance != 1.0 else 1)
  return (3 + teacher) * fwd * latent_shape[0]


class _Stop:
  """Set by SIGTERM (preemption): the loop saves and exits at the next step boundary."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    self.requested = True

  def restore(self):
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
  parameter table of a fresh run."""
  start = ckpt.latest_step()
  if start is None:
    from clu import parameter_overview
    writer.text(parameter_overview.get_parameter_overview(
        nnx.to_pure_dict(run.state.params), include_stats=False))
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
  """Steps until `config.total_steps`, a preemption or a non-finite loss."""
  config = run.config
  config_json = config.to_json_best_effort()
  step = int(run.state.step)
  fn_key, step_fn = None, None
  window_start, window_steps = time.perf_counter(), 0
  while step < config.total_steps:
    key = distill_round(config, step) if config.objective == "distill" else None
    if config.objective == "distill" and key != fn_key and fn_key is not None:
      run.state = run.state.replace(teacher=jax.tree.map(jnp.copy, run.state.params))
      writer.text(f"distillation round {key[0]}: {key[1]}-step student")
    if key != fn_key or step_fn is None:
      step_fn = make_step_fn(run, *(key[1:] if key else ()))
      fn_key = key
    batch = next(batches)
    run.state, step_metrics = step_fn(run.state, batch, run.frozen)
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
                          **_throughput(run, batch, window_steps, elapsed), **batches.metrics()})
      window_start, window_steps = time.perf_counter(), 0
    preempted = stop.requested or ckpt.reached_preemption(step)
    ckpt.save(step, run.state, batches.get_state(), config_json,
              force=preempted or step == config.total_steps)
    if preempted:
      writer.text(f"stopping at step {step} (preemption); checkpoint saved")
      break


def _throughput(run: Run, batch: dict, steps: int, seconds: float) -> dict:
  """step time, samples/s, tokens/s, TFLOP/s per device and MFU (vs config.peak_tflops)."""
  shape = _latent_shape(run, batch)
  tokens = int(np.prod(shape[1:4])) // int(np.prod(run.dit_cfg.patch_size)) * shape[0]
  step_s = seconds / max(steps, 1)
  tflops = step_flops(run, shape) / step_s / 1e12 / run.mesh.size
  return {"step_s": step_s, "samples_per_s": shape[0] / step_s, "tokens_per_s": tokens / step_s,
          "tflops_per_device": tflops, "mfu": tflops / run.config.peak_tflops}


def _latent_shape(run: Run, batch: dict) -> tuple[int, ...]:
  if "hq_moments" in batch:
    b, t, h, w, _ = batch["hq_moments"].shape
  else:
    vae = vae_config.VAEConfig(**dict(run.config.vae))
    b, t, h, w, _ = batch["hq"].shape
    t, h, w = vae.latent_frames(t), h // vae.spatial_factor, w // vae.spatial_factor
  return b, t, h, w, run.dit_cfg.vid_out_channels
