"""The training config's fields: `base_config(model, vae)` wraps a model config (`configs/
seedvr2_3b.py`, `configs/seedvr2_7b.py`) and a VAE config (`configs/vae.py`) with every training
field; recipes (sizes, learning rates, schedules, objectives) live in `configs/train_*.py`.

  seed, objective    a name of `train.objectives.OBJECTIVES`
  model              NaDiTConfig fields (architecture, numerics, remat, scan_layers)
  vae                VAEConfig fields
  init.checkpoint    a `seedvr2-jax convert` / `export-run` directory to start from ("" = scratch)
  text               lengths of the random text embeddings used without a checkpoint
  diffusion          flow matching (losses/flow_matching.DiffusionLossConfig)
  distill            progressive distillation: teacher_steps, rounds, steps_per_round, guidance
  apt                adversarial post-training: APTConfig fields (loss weights, sigmas, shifts,
                     the discriminator's head layers and remat, d_sequential)
  vae_loss           VAE reconstruction: ReconstructionConfig fields
  optim, d_optim     optimizers (train/optim.py) of the trained model and of APT's discriminator
  ema_decay          0 disables the EMA copy
  batch_size         global batch (samples); accum_steps microbatches per step
  mesh, dcn_mesh     device mesh sizes within a slice / node and across them (parallel/mesh.py)
  sharding_rules     logical-axis rules (parallel/sharding.py)
  data               the Grain pipeline (data/batching.py)
"""

from __future__ import annotations

import dataclasses

import ml_collections

from seedvr2_jax.data import batching
from seedvr2_jax.losses.flow_matching import DiffusionLossConfig
from seedvr2_jax.losses.reconstruction import ReconstructionConfig
from seedvr2_jax.parallel.mesh import AXES
from seedvr2_jax.parallel.sharding import DEFAULT_RULES
from seedvr2_jax.train.objectives.apt import APTConfig


def _fields(dataclass_instance) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dataclasses.asdict(dataclass_instance))


def optimizer(lr: float) -> ml_collections.ConfigDict:
  """AdamW (or RMSProp) with warm-up, a schedule and global-norm clipping (train/optim.py);
  `mu_dtype` is the dtype of AdamW's first moment (bfloat16 halves it)."""
  return ml_collections.ConfigDict(dict(name="adamw", lr=lr, end_lr=0.0, warmup_steps=0,
                                        schedule="constant", clip_norm=1.0, b1=0.9, b2=0.999,
                                        eps=1e-8, weight_decay=0.01, rmsprop_decay=0.9,
                                        mu_dtype="float32"))


def base_config(model: ml_collections.ConfigDict,
                vae: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Every training field around `model` (NaDiTConfig fields) and `vae` (VAEConfig fields)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.objective = "diffusion"
  c.model = model
  c.vae = vae
  c.init = ml_collections.ConfigDict(dict(checkpoint=""))
  c.text = ml_collections.ConfigDict(dict(pos_length=58, neg_length=64))
  c.diffusion = _fields(DiffusionLossConfig())
  c.distill = ml_collections.ConfigDict(dict(teacher_steps=64, rounds=6, steps_per_round=10_000,
                                             first_round_guidance=7.5))
  c.apt = _fields(APTConfig())
  c.vae_loss = _fields(ReconstructionConfig())
  c.optim = optimizer(1e-4)
  c.d_optim = optimizer(1e-4)
  c.ema_decay = 0.0
  c.batch_size = 1
  c.accum_steps = 1
  c.encode_chunk = ml_collections.FieldReference(None, field_type=int)
  c.total_steps = 100
  c.log_every = 10
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.peak_tflops = 989.0  # per device, for MFU (H100/H200 dense bf16)
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, sequence=1, tensor=1))
  # Sizes across slices / nodes (their product: the number of slices); all 1: one slice.
  c.dcn_mesh = ml_collections.ConfigDict({axis: 1 for axis in AXES})
  c.sharding_rules = DEFAULT_RULES
  c.data = batching.default_config()
  return c
