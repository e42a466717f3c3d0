"""VAE reconstruction loss (SeedVR trains its VAE with L1 + LPIPS + GAN; here L1 + LPIPS and a
small KL, enough for a small VAE trained in minutes):

  loss = l1 mean|x - x'| + lpips mean_frames LPIPS(x, x') + kl mean KL(q(z|x) || N(0, I))
  x' = decode(z), z ~ q(z|x) the posterior sample; pixels in [-1, 1], LPIPS frame by frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp

from seedvr2_jax.models.vae import codec
from seedvr2_jax.models.vae.autoencoder import VideoAutoencoder


@dataclasses.dataclass(frozen=True)
class ReconstructionConfig:
  l1: float = 1.0
  lpips: float = 0.5
  kl: float = 1e-6


def kl_to_standard_normal(mean, logvar) -> jnp.ndarray:
  """Mean over elements of KL(N(mean, exp(logvar)) || N(0, 1))."""
  return 0.5 * jnp.mean(mean ** 2 + jnp.exp(logvar) - 1.0 - logvar)


def reconstruction_loss(vae: VideoAutoencoder, x_bthwc, key, cfg: ReconstructionConfig,
                        perceptual: Callable | None):
  """(loss, metrics) for pixels in [-1, 1]; `perceptual(x, y)` maps (N, H, W, 3) images in
  [0, 1] to (N,) distances (metrics/lpips.py), required when cfg.lpips > 0."""
  mean, logvar = codec.split_moments(codec.encode(vae, x_bthwc))
  z = codec.sample_posterior(mean, logvar, key=key)
  recon = codec.decode(vae, z).astype(jnp.float32)
  l1 = jnp.mean(jnp.abs(recon - x_bthwc))
  kl = kl_to_standard_normal(mean, logvar)
  metrics = {"l1": l1, "kl": kl}
  loss = cfg.l1 * l1 + cfg.kl * kl
  if cfg.lpips:
    frames = lambda v: (v.reshape(-1, *v.shape[2:]) + 1.0) * 0.5
    lp = jnp.mean(perceptual(frames(recon.clip(-1, 1)), frames(x_bthwc)))
    metrics["lpips"] = lp
    loss = loss + cfg.lpips * lp
  mse = jnp.mean(((recon.clip(-1, 1) - x_bthwc) * 0.5) ** 2)
  metrics["psnr"] = -10.0 * jnp.log10(mse)
  return loss, metrics
