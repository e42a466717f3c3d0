"""VAE parity: video and image paths, encode (mean, logvar, sample with the stored noise) and
decode, one pass in float32, against the official outputs (pixels are (B, C, T, H, W) there)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seedvr2_jax.convert import vae as vae_convert
from seedvr2_jax.convert.state_dict import open_state_dict
from seedvr2_jax.models.vae import codec
from seedvr2_jax.models.vae import config as vae_config
from seedvr2_jax.parity.common import Check, Fixture, max_rel_err

REQUIRED = ("vae.safetensors", "vae_io.npz")
TOL = 1e-4


def _channels_last(x):
  """(B, C, T, H, W) or image (B, C, H, W) -> (B, T, H, W, C)."""
  x = np.moveaxis(np.asarray(x), 1, -1)
  return x if x.ndim == 5 else x[:, None]


def _channels_first(x, like):
  """(B, T, H, W, C) -> the layout of `like`: (B, C, T, H, W), or (B, C, H, W) for images."""
  x = np.moveaxis(np.asarray(x), -1, 1)
  return x[:, :, 0] if like.ndim == 4 else x


def run(fixture: Fixture, component: str = "vae") -> list[Check]:
  cfg = vae_config.from_official(fixture.config["vae"]["config"])
  graphdef, state = vae_convert.load_state(open_state_dict(fixture.file("vae.safetensors")), cfg)
  io = fixture.arrays("vae_io.npz")

  @jax.jit
  def encode(state, x, eps):
    mean, logvar = codec.split_moments(codec.encode(nnx.merge(graphdef, state), x))
    return mean, logvar, codec.sample_posterior(mean, logvar, eps)

  decode = jax.jit(lambda state, z: codec.decode(nnx.merge(graphdef, state), z))
  checks = []
  for prefix, x_key, (mean_key, logvar_key, eps_key, z_key, dec_key) in (
      ("video", "x", ("enc_mean", "enc_logvar", "enc_eps", "enc_z", "dec_out")),
      ("image", "img_x", ("img_mean", "img_logvar", "img_eps", "img_z", "img_dec"))):
    if x_key not in io:
      continue
    with jax.default_matmul_precision("highest"):
      mean, logvar, z = encode(state, jnp.asarray(_channels_last(io[x_key])),
                               jnp.asarray(_channels_last(io[eps_key])))
      decoded = decode(state, jnp.asarray(_channels_last(io[z_key])))
    for name, out, ref_key in (("mean", mean, mean_key), ("logvar", logvar, logvar_key),
                               ("sample", z, z_key), ("decode", decoded, dec_key)):
      ref = io[ref_key]
      checks.append(Check(f"{prefix}_{name}", max_rel_err(_channels_first(out, ref), ref), TOL))
  return checks
