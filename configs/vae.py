"""The causal video VAE (official `models/video_vae_v3/s8_c16_t4_inflation_sd3.yaml`).

  seedvr2-jax convert ... --vae-config configs/vae.py        # the official VAE (the default)
  seedvr2-jax convert ... --vae-config configs/vae.py:tiny   # the parity fixture's tiny VAE

Defaults of `seedvr2_jax.models.vae.config.VAEConfig` are the official values: channels
(128, 256, 512, 512), 2 resnets per encoder block (3 per decoder block), 16 latent channels,
GroupNorm(32, eps 1e-6), 4x temporal / 8x spatial compression, scaling factor 0.9152.
"""

import dataclasses

import ml_collections

from seedvr2_jax.models.vae.config import TINY, VAEConfig


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.vae = ml_collections.ConfigDict(dataclasses.asdict(VAEConfig()))
  if arg == "tiny":
    config.vae.update(TINY)
  elif arg:
    raise ValueError(f"unknown vae config variant {arg!r} (expected '' or 'tiny')")
  return config
