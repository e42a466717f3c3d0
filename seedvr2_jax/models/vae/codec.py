"""Encode / decode whole videos with the causal VAE: one pass or fixed-size temporal chunks.

Chunked mode runs the first frame (the causal head: convs replicate it in front), then
the full chunks under `lax.scan` with each causal conv's cached frames as the carry, then the
shorter remainder, so memory does not grow with the number of frames and the result equals the
one-pass result. With spatial tiles, each tile runs through all its chunks before the next
(`tiling.tiled`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from seedvr2_jax.errors import ConfigError, InputError
from seedvr2_jax.models.vae import tiling
from seedvr2_jax.models.vae.autoencoder import VideoAutoencoder
from seedvr2_jax.models.vae.layers import CausalState

LOGVAR_RANGE = (-30.0, 20.0)


def check_pixels(vae: VideoAutoencoder, x_bthwc: jnp.ndarray) -> None:
  """Raises InputError unless x is (B, T, H, W, C) with T = 1 + 4n and H, W multiples of 8."""
  cfg = vae.cfg
  if x_bthwc.ndim != 5 or x_bthwc.shape[-1] != cfg.in_channels:
    raise InputError(f"VAE input must be (B, T, H, W, {cfg.in_channels}), got {x_bthwc.shape}")
  _, t, h, w, _ = x_bthwc.shape
  if t % cfg.temporal_factor != 1 and t != 1:
    raise InputError(f"VAE input has {t} frames; it needs {cfg.temporal_factor}n+1 frames "
                     f"(or 1 for an image): pad the clip first")
  if h % cfg.spatial_factor or w % cfg.spatial_factor:
    raise InputError(f"VAE input size {h}x{w} must be a multiple of {cfg.spatial_factor}")


def _chunked(step: Callable, x: jnp.ndarray, chunk: int | None) -> jnp.ndarray:
  """Runs `step(x_chunk, state)` over the first frame, then full chunks of `chunk` frames under
  `lax.scan`, then the shorter remainder, carrying the causal caches throughout. Chunk
  boundaries do not change the result; they bound the memory."""
  total, first = x.shape[1], 1
  if chunk is None or total <= first:
    return step(x, CausalState())
  state = CausalState()
  outputs = [step(x[:, :first], state)]
  caches = state.next
  n_full = (total - first) // chunk
  if n_full:
    body_frames = x[:, first:first + n_full * chunk]
    xs = jnp.moveaxis(body_frames.reshape(x.shape[0], n_full, chunk, *x.shape[2:]), 1, 0)

    def body(carry, x_chunk):
      chunk_state = CausalState(carry)
      y = step(x_chunk, chunk_state)
      return chunk_state.next, y

    caches, ys = jax.lax.scan(body, caches, xs)
    outputs.append(jnp.moveaxis(ys, 0, 1).reshape(x.shape[0], -1, *ys.shape[3:]))
  if first + n_full * chunk < total:
    outputs.append(step(x[:, first + n_full * chunk:], CausalState(caches)))
  return jnp.concatenate(outputs, axis=1)


def _tile_plan(vae: VideoAutoencoder, latent_hw, tile_px, overlap_px):
  """Tile plan in latent units from pixel sizes, or None when tiling is off."""
  if tile_px is None:
    return None
  sf = vae.cfg.spatial_factor
  tile_px, overlap_px = tuple(tile_px), tuple(overlap_px)
  if any(v % sf or v < 0 for v in tile_px + overlap_px) or min(tile_px) == 0:
    raise ConfigError(f"tile {tile_px} and overlap {overlap_px} must be positive multiples "
                      f"of {sf} pixels")
  return tiling.tile_plan(latent_hw, tuple(t // sf for t in tile_px),
                          tuple(o // sf for o in overlap_px))


def encode(vae: VideoAutoencoder, x_bthwc: jnp.ndarray, *, chunk_frames: int | None = None,
           tile_px: tuple[int, int] | None = None,
           overlap_px: tuple[int, int] = (0, 0)) -> jnp.ndarray:
  """Pixels (B, T, H, W, 3) in [-1, 1] -> moments (B, T', H/8, W/8, 2 * latent).

  chunk_frames: frames per temporal chunk (a multiple of 4) or None for one pass.
  tile_px / overlap_px: spatial tile and overlap (pixels, multiples of 8), or None for no tiling.
  """
  check_pixels(vae, x_bthwc)
  tf, sf = vae.cfg.temporal_factor, vae.cfg.spatial_factor
  if chunk_frames is not None and (chunk_frames <= 0 or chunk_frames % tf):
    raise ConfigError(f"encode chunk_frames={chunk_frames} must be a positive multiple of {tf}")
  run = functools.partial(_chunked, vae.encode_chunk, chunk=chunk_frames)
  plan = _tile_plan(vae, (x_bthwc.shape[2] // sf, x_bthwc.shape[3] // sf), tile_px, overlap_px)
  if plan is not None and plan.count > 1:
    run = tiling.tiled(run, plan, in_scale=sf, out_scale=1)
  return run(x_bthwc)


def decode(vae: VideoAutoencoder, z_bthwc: jnp.ndarray, *, chunk_latents: int | None = None,
           tile_px: tuple[int, int] | None = None,
           overlap_px: tuple[int, int] = (0, 0)) -> jnp.ndarray:
  """Latents (B, T', h, w, latent) -> pixels (B, 1 + 4 (T' - 1), 8h, 8w, 3).

  chunk_latents: latent frames per temporal chunk or None for one pass.
  tile_px / overlap_px: spatial tile and overlap in output pixels, or None for no tiling.
  """
  cfg = vae.cfg
  if z_bthwc.ndim != 5 or z_bthwc.shape[-1] != cfg.latent_channels:
    raise InputError(f"VAE latents must be (B, T, h, w, {cfg.latent_channels}), "
                     f"got {z_bthwc.shape}")
  if chunk_latents is not None and chunk_latents <= 0:
    raise ConfigError(f"decode chunk_latents={chunk_latents} must be positive")
  run = functools.partial(_chunked, vae.decode_chunk, chunk=chunk_latents)
  plan = _tile_plan(vae, z_bthwc.shape[2:4], tile_px, overlap_px)
  if plan is not None and plan.count > 1:
    run = tiling.tiled(run, plan, in_scale=1, out_scale=cfg.spatial_factor)
  return run(z_bthwc)


def split_moments(moments: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Moments -> (mean, logvar clamped to [-30, 20]), float32."""
  mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
  return mean, jnp.clip(logvar, *LOGVAR_RANGE)


def sample_posterior(mean: jnp.ndarray, logvar: jnp.ndarray, noise: jnp.ndarray | None = None,
                     *, key: jax.Array | None = None) -> jnp.ndarray:
  """mean + exp(logvar / 2) * eps with eps = `noise` or drawn from `key`; neither -> the mean."""
  if noise is None and key is None:
    return mean
  if noise is None:
    noise = jax.random.normal(key, mean.shape, jnp.float32)
  return mean + jnp.exp(0.5 * logvar) * noise
