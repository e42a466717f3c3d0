"""The toy-scale SeedVR2 (experiments/toy): a 6-block DiT of the 3B code path and a 3-level causal
VAE of the same code, trained in minutes on one GPU on degraded crops of real sample clips.
`experiments/toy/run.py` runs the stages in order, each a `seedvr2-jax train` run of:

  configs/toy.py:vae         VAE reconstruction (L1 + LPIPS + KL) from scratch
  configs/toy.py:diffusion   flow matching from scratch on the trained VAE's latents
  configs/toy.py:distill     progressive distillation 8 -> 4 -> 2 -> 1 steps (400 steps a round)
  configs/toy.py:apt         adversarial post-training of the one-step model: RpGAN +
                             approximate R1/R2 + L1 + feature matching (L1 and FM 1.0)
  configs/toy.py:apt_gan     ablation: RpGAN + R1/R2 only     (the paper's Table 3, row 2)
  configs/toy.py:apt_gan_l1  ablation: RpGAN + R1/R2 + L1     (row 3)
  configs/toy.py:l1          control: APT with L1 1.0 and no GAN / feature matching terms
  configs/toy.py:regression  one-step L1 regression of the distilled model (no discriminator
                             at all: the cheap fidelity fine-tuning, losses/regression.py)

Task: 2x restoration of Real-ESRGAN-degraded video (`data.degradation`, `data.scale`), 17-frame
96 x 96 crops (`data.buckets`): 5 latent frames, so the VAE learns the steady state of its
causal temporal compression and the DiT sees temporal windows of 2 latent frames, as on longer
videos. The VAE compresses 4x in space (three blocks, not the official four) and 4x in time with
16 channels, as the official one. `init.checkpoint` of each stage is the previous stage's export
(experiments/toy/run.py sets it); experiments/toy/README.md records why these choices.
"""

import os

import ml_collections

from seedvr2_jax.config_lib import load_config
from seedvr2_jax.train.schema import base_config

HERE = os.path.dirname(os.path.abspath(__file__))

TOY_DIT = dict(vid_dim=256, txt_in_dim=32, heads=8, head_dim=32, num_layers=6, mm_layers=2,
               rope_dim=32)
TOY_VAE = dict(block_out_channels=(32, 64, 128), layers_per_block=1, norm_num_groups=8)
STAGES = ("vae", "diffusion", "distill", "regression", "apt", "apt_gan", "apt_gan_l1", "l1")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  stage = arg or "diffusion"
  if stage not in STAGES:
    raise ValueError(f"unknown toy stage {stage!r} (expected one of {STAGES})")
  c = base_config(load_config(os.path.join(HERE, "seedvr2_3b.py")).model,
                  load_config(os.path.join(HERE, "vae.py")).vae)
  c.model.update(TOY_DIT)
  c.vae.update(dict(TOY_VAE, dtype="bfloat16"))
  c.text.update(pos_length=16, neg_length=16)
  c.data.update(buckets=((17, 96, 96),), degradation="realesrgan", scale=2)
  c.batch_size = 128
  c.ema_decay = 0.995  # short runs: the EMA must forget the initialisation
  c.log_every = 50
  c.checkpoint_every = 1000
  c.keep_checkpoints = 1
  c.optim.update(lr=3e-4, warmup_steps=200, weight_decay=0.01)
  c.total_steps = 4000
  if stage == "vae":
    c.objective = "vae"  # L1 + 0.5 LPIPS + 1e-6 KL (config.vae_loss)
    c.batch_size = 8
    c.ema_decay = 0.0
    c.optim.update(lr=3e-4, warmup_steps=100)
    c.total_steps = 2500
  elif stage == "distill":
    c.objective = "distill"
    c.distill.update(teacher_steps=8, rounds=3, steps_per_round=400, first_round_guidance=1.0)
    c.optim.update(lr=1e-4, warmup_steps=50)
    c.ema_decay = 0.98
    c.total_steps = 1200
  elif stage == "regression":
    c.objective = "regression"
    c.optim.update(lr=1e-4, warmup_steps=50)
    c.ema_decay = 0.98
    c.total_steps = 2000
  elif stage != "diffusion":
    # APT and its ablations: images for the first 75 steps, then 17-frame clips (the paper's
    # progressive growth); G and D from a one-step model (`run.py --apt-from`: the distilled
    # one, as the paper, or its L1 regression, which experiments/toy/README.md uses). L1 and FM
    # weigh 1.0, not the paper's 0.1, which lets the GAN term pull a model this small away from
    # the data.
    c.objective = "apt"
    c.apt.update(d_remat="none", l1=1.0, feature_matching=1.0)
    c.batch_size = 64
    c.data.update(buckets=((1, 96, 96), (17, 96, 96)), bucket_weights=(1, 0),
                  bucket_stages=((75, (0, 1)),))
    c.optim.update(lr=5e-6, warmup_steps=50)  # the paper's image-stage lr
    c.d_optim.update(lr=1e-4, warmup_steps=50)
    c.ema_decay = 0.98
    c.total_steps = 300
    if stage == "apt_gan":
      c.apt.update(l1=0.0, feature_matching=0.0)
    elif stage == "apt_gan_l1":
      c.apt.update(feature_matching=0.0)
    elif stage == "l1":
      c.apt.update(gan=0.0, r1=0.0, r2=0.0, l1=1.0, feature_matching=0.0)
  return c
