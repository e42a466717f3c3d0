"""The causal video VAE (official VideoAutoencoderKLWrapper): encoder, decoder, one chunk at a time.

`encode_chunk` / `decode_chunk` process one temporal chunk given a `CausalState`; a fresh state
(first chunk) over the whole video is the official one-pass result. `codec.py` drives chunks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from seedvr2_jax.models.vae.config import VAEConfig
from seedvr2_jax.models.vae.layers import (CausalConv3d, CausalState, Downsample3D, GroupNorm,
                                           MidBlock3D, ResnetBlock3D, Upsample3D)


class DownEncoderBlock3D(nnx.Module):

  def __init__(self, cfg: VAEConfig, cin: int, cout: int, downsample: bool, temporal: bool, *,
               rngs: nnx.Rngs):
    self.resnets = nnx.List([ResnetBlock3D(cfg, cin if i == 0 else cout, cout, rngs=rngs)
                             for i in range(cfg.layers_per_block)])
    self.downsamplers = (nnx.List([Downsample3D(cfg, cout, temporal, rngs=rngs)])
                         if downsample else None)

  def __call__(self, x, state: CausalState):
    for resnet in self.resnets:
      x = resnet(x, state)
    return x if self.downsamplers is None else self.downsamplers[0](x, state)


class UpDecoderBlock3D(nnx.Module):

  def __init__(self, cfg: VAEConfig, cin: int, cout: int, upsample: bool, temporal: bool, *,
               rngs: nnx.Rngs):
    self.resnets = nnx.List([ResnetBlock3D(cfg, cin if i == 0 else cout, cout, rngs=rngs)
                             for i in range(cfg.layers_per_block + 1)])
    self.upsamplers = (nnx.List([Upsample3D(cfg, cout, temporal, rngs=rngs)])
                       if upsample else None)

  def __call__(self, x, state: CausalState):
    for resnet in self.resnets:
      x = resnet(x, state)
    return x if self.upsamplers is None else self.upsamplers[0](x, state)


class Encoder3D(nnx.Module):
  """(B, T, H, W, 3) -> (B, 1 + (T-1)/4, H/8, W/8, 2 * latent) moments."""

  def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
    chans = cfg.block_out_channels
    self.conv_in = CausalConv3d(cfg, cfg.in_channels, chans[0], (3, 3, 3), rngs=rngs)
    self.down_blocks = nnx.List([
        DownEncoderBlock3D(cfg, chans[max(i - 1, 0)], c, i < len(chans) - 1,
                           cfg.encoder_temporal_down(i), rngs=rngs)
        for i, c in enumerate(chans)])
    self.mid_block = MidBlock3D(cfg, chans[-1], rngs=rngs)
    self.conv_norm_out = GroupNorm(cfg, chans[-1])
    self.conv_out = CausalConv3d(cfg, chans[-1], 2 * cfg.latent_channels, (3, 3, 3), rngs=rngs)

  def __call__(self, x, state: CausalState):
    x = self.conv_in(x, state)
    for block in self.down_blocks:
      x = block(x, state)
    x = self.mid_block(x, state)
    return self.conv_out(jax.nn.silu(self.conv_norm_out(x)), state)


class Decoder3D(nnx.Module):
  """(B, 1 + n, h, w, latent) -> (B, 1 + 4n, 8h, 8w, 3)."""

  def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
    chans = cfg.block_out_channels[::-1]
    self.conv_in = CausalConv3d(cfg, cfg.latent_channels, chans[0], (3, 3, 3), rngs=rngs)
    self.mid_block = MidBlock3D(cfg, chans[0], rngs=rngs)
    self.up_blocks = nnx.List([
        UpDecoderBlock3D(cfg, chans[max(i - 1, 0)], c, i < len(chans) - 1,
                         cfg.decoder_temporal_up(i), rngs=rngs)
        for i, c in enumerate(chans)])
    self.conv_norm_out = GroupNorm(cfg, chans[-1])
    self.conv_out = CausalConv3d(cfg, chans[-1], cfg.out_channels, (3, 3, 3), rngs=rngs)

  def __call__(self, z, state: CausalState):
    x = self.mid_block(self.conv_in(z, state), state)
    for block in self.up_blocks:
      x = block(x, state)
    return self.conv_out(jax.nn.silu(self.conv_norm_out(x)), state)


class VideoAutoencoder(nnx.Module):
  """Encoder + decoder (+ optional 1x1x1 quant convs) with per-conv temporal cache keys."""

  def __init__(self, cfg: VAEConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.encoder = Encoder3D(cfg, rngs=rngs)
    self.decoder = Decoder3D(cfg, rngs=rngs)
    one = dict(kernel=(1, 1, 1), spatial_pad=((0, 0), (0, 0)), rngs=rngs)
    latent = cfg.latent_channels
    self.quant_conv = CausalConv3d(cfg, 2 * latent, 2 * latent, **one) if cfg.use_quant_conv \
        else None
    self.post_quant_conv = CausalConv3d(cfg, latent, latent, **one) if cfg.use_post_quant_conv \
        else None
    for path, node in nnx.iter_graph(self):
      if isinstance(node, CausalConv3d):
        node.cache_key = "/".join(map(str, path))

  def encode_chunk(self, x_bthwc: jnp.ndarray, state: CausalState) -> jnp.ndarray:
    """Pixels of one chunk -> posterior moments [mean | logvar] (B, T', h, w, 2 * latent)."""
    h = self.encoder(x_bthwc.astype(jnp.dtype(self.cfg.dtype)), state)
    return h if self.quant_conv is None else self.quant_conv(h, state)

  def decode_chunk(self, z_bthwc: jnp.ndarray, state: CausalState) -> jnp.ndarray:
    """Latents of one chunk -> pixels (B, T, H, W, out_channels)."""
    z = z_bthwc.astype(jnp.dtype(self.cfg.dtype))
    if self.post_quant_conv is not None:
      z = self.post_quant_conv(z, state)
    return self.decoder(z, state)


def random_init(cfg: VAEConfig, seed: int) -> VideoAutoencoder:
  """A randomly initialised VAE, drawn with the "unsafe_rbg" generator: its per-shape initialiser
  programs compile faster than threefry's (docs/benchmarks.md); the values depend on the
  backend, which does not matter for random weights."""
  return VideoAutoencoder(cfg, nnx.Rngs(jax.random.key(seed, impl="unsafe_rbg")))
