"""The training config's fields and defaults (`configs/*.py` start from `base_config()`).

  seed, objective ("diffusion" | "distill" | "apt" | "regression")
  model         NaDiT fields: variant + overrides of the official architecture, numerics, remat,
                scan_layers (repeating blocks under lax.scan)
  vae           VAEConfig fields of the frozen VAE that encodes pixel batches
  init          checkpoint: a `seedvr2-jax convert` directory (DiT, VAE, text) or "" (scratch)
  text          lengths of the random text embeddings used without a checkpoint
  diffusion     flow-matching loss (losses/flow_matching.DiffusionLossConfig)
  distill       progressive distillation: teacher_steps, rounds, steps_per_round, guidance
  optim         AdamW or RMSProp + schedule (train/optim.py); d_optim: the discriminator's
  apt           adversarial post-training: loss weights, sigmas, timestep shifts, d_sequential
                (the D step's sample groups one at a time, for memory; train/apt.py),
                discriminator head_layers (() = APT's relative depths) and trunk remat
  ema_decay     0 disables the EMA copy
  batch_size    global batch (samples); accum_steps microbatches per step
  mesh, dcn_mesh, sharding_rules   device mesh and logical-axis rules (parallel/)
  data          the Grain pipeline (data/batching.py)
"""

from __future__ import annotations

import dataclasses

import ml_collections

from seedvr2_jax.data import batching
from seedvr2_jax.losses.flow_matching import DiffusionLossConfig
from seedvr2_jax.models.vae.config import VAEConfig
from seedvr2_jax.parallel.sharding import DEFAULT_RULES
from seedvr2_jax.train.apt import APTConfig


def base_config() -> ml_collections.ConfigDict:
  """Every training field with the paper's optimisation defaults (SeedVR2: AdamW lr 1e-6,
  weight decay 0.01; EMA 0.9998 as the official config) and the official model sizes."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.objective = "diffusion"
  c.model = ml_collections.ConfigDict(dict(variant="3b", param_dtype="float32",
                                           dtype="bfloat16", remat="full", scan_layers=False))
  c.vae = ml_collections.ConfigDict(dataclasses.asdict(VAEConfig(dtype="bfloat16")))
  c.init = ml_collections.ConfigDict(dict(checkpoint=""))  # `seedvr2-jax convert` output dir
  c.text = ml_collections.ConfigDict(dict(pos_length=58, neg_length=64))  # random texts only
  c.diffusion = ml_collections.ConfigDict(dataclasses.asdict(DiffusionLossConfig()))
  c.distill = ml_collections.ConfigDict(dict(teacher_steps=64, rounds=6, steps_per_round=10_000,
                                             first_round_guidance=7.5))
  c.optim = ml_collections.ConfigDict(dict(name="adamw", lr=1e-6, end_lr=0.0, warmup_steps=0,
                                           schedule="constant", clip_norm=1.0, b1=0.9, b2=0.999,
                                           eps=1e-8, weight_decay=0.01, rmsprop_decay=0.9))
  c.apt = ml_collections.ConfigDict(dict(dataclasses.asdict(APTConfig()), head_layers=(),
                                         d_remat="full"))
  c.d_optim = ml_collections.ConfigDict(c.optim.to_dict())  # the discriminator's (APT)
  c.ema_decay = 0.9998
  c.batch_size = 2
  c.accum_steps = 1
  c.encode_chunk = None
  c.total_steps = 100
  c.log_every = 10
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.peak_tflops = 989.0  # per device, for MFU (H100/H200 dense bf16)
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, sequence=1, tensor=1))
  c.dcn_mesh = ml_collections.FieldReference(None, field_type=dict)
  c.sharding_rules = DEFAULT_RULES
  c.data = batching.default_config()
  return c


def pod_config(variant: str, arg: str | None) -> ml_collections.ConfigDict:
  """The paper-scale run of `configs/train_{variant}.py`: 72 GPUs, one 720p clip each, FSDP
  inside 8-GPU nodes; arg "distill": progressive distillation 64 -> 1 in 6 rounds; "apt":
  adversarial post-training of the distilled one-step model."""
  c = base_config()
  c.model.variant = variant
  c.batch_size = 72
  c.total_steps = 100_000
  c.optim.warmup_steps = 1000
  c.log_every = 10
  c.checkpoint_every = 1000
  c.mesh.update(data=-1, fsdp=8)
  if arg == "distill":
    c.objective = "distill"
    c.distill.update(teacher_steps=64, rounds=6, steps_per_round=10_000,
                     first_round_guidance=7.5)
    c.total_steps = 60_000
  elif arg == "apt":
    # SeedVR2 stage 2 (spec/paper_facts.md 3.2-3.5): G and D start from the distilled model
    # (init.checkpoint); AdamW lr 1e-6, weight decay 0.01 for both (the base optimizers); 20k
    # iterations as the paper's ablations. Clips grow: images first, then mixed lengths (the
    # paper gives no switch step; 5k is ours).
    c.objective = "apt"
    c.total_steps = 20_000
    c.data.buckets = ((1, 720, 1280), (5, 720, 1280), (9, 720, 1280), (21, 720, 1280))
    c.data.bucket_weights = (1, 0, 0, 0)
    c.data.bucket_stages = ((5_000, (0, 1, 1, 1)),)
  elif arg:
    raise ValueError(f"unknown variant {arg!r} (expected '', 'distill' or 'apt')")
  return c
