"""A tiny SeedVR2 (the 4-block DiT of `seedvr2_3b.py:tiny`, the VAE of `vae.py:tiny`) trained on
the real sample clips in tests/fixtures/media; about a minute on a 2-core CPU.

  seedvr2-jax train --config configs/tiny.py --workdir /tmp/tiny            # diffusion
  seedvr2-jax train --config configs/tiny.py:distill --workdir /tmp/tiny_d  # 2 rounds 4 -> 1
  seedvr2-jax train --config configs/tiny.py:apt --workdir /tmp/tiny_a      # adversarial (APT)
  seedvr2-jax train --config configs/tiny.py:vae --workdir /tmp/tiny_v      # VAE reconstruction
  seedvr2-jax train --config configs/tiny.py --workdir W --config.total_steps=100

Run again with the same workdir to resume from its newest checkpoint.
"""

import os

import ml_collections

from seedvr2_jax.config_lib import load_config
from seedvr2_jax.train.schema import base_config

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base_config(load_config(os.path.join(HERE, "seedvr2_3b.py:tiny")).model,
                  load_config(os.path.join(HERE, "vae.py:tiny")).vae)
  c.optim.update(lr=1e-3, warmup_steps=5)
  c.ema_decay = 0.99
  c.total_steps = 40
  c.log_every = 5
  c.checkpoint_every = 20
  c.batch_size = 2
  c.data.update(sources=os.path.join(ROOT, "tests", "fixtures", "media"),
                buckets=((5, 64, 64),), degradation="light")
  if arg == "distill":
    c.objective = "distill"
    c.distill.update(teacher_steps=4, rounds=2, steps_per_round=20, first_round_guidance=2.0)
  elif arg == "apt":
    c.objective = "apt"
    c.apt.d_remat = "none"
    # clips grow as in the paper's APT stage: images for 20 steps, then 5-frame clips
    c.data.update(buckets=((1, 64, 64), (5, 64, 64)), bucket_weights=(1, 0),
                  bucket_stages=((20, (0, 1)),))
    c.d_optim.update(lr=1e-4, warmup_steps=5)
  elif arg == "vae":
    c.objective = "vae"
    c.data.buckets = ((5, 32, 32),)
  elif arg:
    raise ValueError(f"unknown tiny config variant {arg!r} (expected '', 'distill', 'apt' or "
                     f"'vae')")
  return c
