"""SeedVR2-3B training on a pod: flow-matching diffusion training (SeedVR) or progressive
distillation 64 -> 1 steps (SeedVR2 stage 1) or adversarial post-training (stage 2), with the
paper's optimisation (AdamW lr 1e-6, weight decay 0.01, bf16 compute on fp32 master weights,
EMA 0.9998, rematerialised blocks). The model is `seedvr2_3b.py`'s, the VAE `vae.py`'s.

Initialise from a converted official checkpoint (`seedvr2-jax convert ... --out CKPT`) with
--config.init.checkpoint=CKPT, or leave it empty to train from scratch. Data: folders of HQ
videos/images, degraded on the fly (--config.data.sources=DIR).

Single host (8 GPUs: FSDP inside the host):
  seedvr2-jax train --config configs/train_3b.py --workdir /ckpt/run1 \
      --config.init.checkpoint=/ckpt/seedvr2_3b --config.data.sources=/data/videos
  seedvr2-jax train --config configs/train_3b.py:distill --workdir /ckpt/distill1 ...
  seedvr2-jax train --config configs/train_3b.py:apt --workdir /ckpt/apt1 \
      --config.init.checkpoint=/ckpt/distill1_one_step ...   # images first, then clips

Multi-host GPU (SLURM: one process per host, 8 GPUs each; jax.distributed reads SLURM_*):
  srun --nodes=9 --ntasks-per-node=1 seedvr2-jax train --distributed \
      --config configs/train_3b.py --workdir /shared/ckpt/run1 --config.dcn_mesh.data=9 ...
  (mesh: fsdp=8 inside each node over NVLink, data=9 across nodes; 72 GPUs as the paper)

TPU pod slice (one process per host, same command on every host):
  gcloud compute tpus tpu-vm ssh POD --worker=all --command="seedvr2-jax train --distributed \
      --config configs/train_3b.py --workdir gs://bucket/run1 --config.mesh.fsdp=-1 ..."

Long clips: --config.mesh.sequence=2 (or 4) splits each clip's latent width over devices.
Memory for speed: --config.model.remat=dots keeps the linear layers' outputs (H200-class GPUs at
720p x 21; docs/benchmarks.md).
Latents: `seedvr2-jax precompute-latents DATA OUT --checkpoint CKPT --config configs/train_3b.py`
once, then --config.data.latents=OUT skips decoding, degrading and encoding (SeedVR: 4x faster).
"""

import os

import ml_collections

from seedvr2_jax.config_lib import load_config
from seedvr2_jax.train.schema import base_config

HERE = os.path.dirname(os.path.abspath(__file__))


def recipe(model: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """The paper-scale run of `model`: 72 GPUs, one 720p clip each, FSDP inside 8-GPU nodes; arg
  "distill": progressive distillation 64 -> 1 in 6 rounds; "apt": adversarial post-training of
  the distilled one-step model."""
  c = base_config(model, load_config(os.path.join(HERE, "vae.py")).vae)
  c.model.remat = "full"
  c.vae.dtype = "bfloat16"
  for optimizer in (c.optim, c.d_optim):
    optimizer.update(lr=1e-6, weight_decay=0.01, warmup_steps=1000)
  c.ema_decay = 0.9998  # the official config's
  c.batch_size = 72
  c.total_steps = 100_000
  c.log_every = 10
  c.checkpoint_every = 1000
  c.mesh.update(data=-1, fsdp=8)
  if arg == "distill":
    c.objective = "distill"
    c.distill.update(teacher_steps=64, rounds=6, steps_per_round=10_000,
                     first_round_guidance=7.5)
    c.total_steps = 60_000
  elif arg == "apt":
    # SeedVR2 stage 2: G and D start from the distilled model (init.checkpoint); AdamW lr 1e-6,
    # weight decay 0.01 for both; 20k iterations as the paper's ablations. Clips grow: images
    # first, then mixed lengths (the paper gives no switch step; 5k is ours).
    c.objective = "apt"
    c.total_steps = 20_000
    c.data.buckets = ((1, 720, 1280), (5, 720, 1280), (9, 720, 1280), (21, 720, 1280))
    c.data.bucket_weights = (1, 0, 0, 0)
    c.data.bucket_stages = ((5_000, (0, 1, 1, 1)),)
  elif arg:
    raise ValueError(f"unknown variant {arg!r} (expected '', 'distill' or 'apt')")
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return recipe(load_config(os.path.join(HERE, "seedvr2_3b.py")).model, arg)
