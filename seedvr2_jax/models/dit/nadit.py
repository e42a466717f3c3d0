"""NaDiT: the SeedVR2 Swin-MMDiT (both official code paths), for batches of same-shape samples.

The official model packs samples of different shapes into one token sequence; here a call takes
a batch of samples sharing one latent shape (different shapes = different calls/compilations),
and each sample gets its own result (the intended semantics; see spec §2.5 for the official 3B
batching quirk that is not reproduced).
"""

from __future__ import annotations

import einops
import jax.numpy as jnp
from flax import nnx

from seedvr2_jax.models.dit import layers
from seedvr2_jax.models.dit.attention import build_context
from seedvr2_jax.models.dit.block import NaMMSRTransformerBlock
from seedvr2_jax.models.dit.config import NaDiTConfig


def patchify(vid_bthwc: jnp.ndarray, patch: tuple[int, int, int]) -> jnp.ndarray:
  """(B, T, H, W, C) -> (B, T', H/ph, W/pw, pt*ph*pw*C), features ordered (t, h, w, c).

  With pt > 1 and T % pt != 0 the first frame is repeated in front (official NaPatchIn).
  """
  pt, ph, pw = patch
  _, t, h, w, _ = vid_bthwc.shape
  if h % ph or w % pw:
    raise ValueError(f"latent height/width {h}x{w} must be divisible by the patch {ph}x{pw}")
  if t % pt:
    pad = jnp.repeat(vid_bthwc[:, :1], pt - t % pt, axis=1)
    vid_bthwc = jnp.concatenate([pad, vid_bthwc], axis=1)
  return einops.rearrange(vid_bthwc, "b (T t) (H h) (W w) c -> b T H W (t h w c)",
                          t=pt, h=ph, w=pw)


def unpatchify(x_bthwf: jnp.ndarray, patch: tuple[int, int, int], frames: int) -> jnp.ndarray:
  """Inverse of `patchify`, dropping the frames it padded: -> (B, frames, H, W, C)."""
  pt, ph, pw = patch
  x = einops.rearrange(x_bthwf, "b T H W (t h w c) -> b (T t) (H h) (W w) c", t=pt, h=ph, w=pw)
  return x[:, x.shape[1] - frames:]


class PatchIn(nnx.Module):
  def __init__(self, cfg: NaDiTConfig, rngs: nnx.Rngs):
    feat = cfg.vid_in_channels * cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2]
    self.proj = layers.dense(cfg, feat, cfg.vid_dim, (None, layers.EMBED), rngs=rngs)


class PatchOut(nnx.Module):
  def __init__(self, cfg: NaDiTConfig, rngs: nnx.Rngs):
    feat = cfg.vid_out_channels * cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2]
    self.proj = layers.dense(cfg, cfg.vid_dim, feat, (layers.EMBED, None), rngs=rngs)


class NaDiT(nnx.Module):
  """Velocity prediction v(x_t, condition, text, t) of SeedVR2."""

  def __init__(self, cfg: NaDiTConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.vid_in = PatchIn(cfg, rngs)
    self.txt_in = (layers.dense(cfg, cfg.txt_in_dim, cfg.txt_dim, (None, layers.EMBED), rngs=rngs)
                   if cfg.has_txt_in else None)
    self.emb_in = layers.TimeEmbedding(cfg, rngs)
    self.blocks = nnx.List([NaMMSRTransformerBlock(cfg, i, rngs) for i in range(cfg.num_layers)])
    if cfg.vid_out_norm:
      self.vid_out_norm = layers.RMSNorm(cfg, cfg.vid_dim, layers.EMBED)
      self.vid_out_ada = layers.AdaSingle(cfg, ("out",), False, rngs)
    self.vid_out = PatchOut(cfg, rngs)

  def __call__(self, vid_bthwc: jnp.ndarray, txt_blc: jnp.ndarray, timestep_b: jnp.ndarray,
               txt_len_b: jnp.ndarray | None = None) -> jnp.ndarray:
    """Predicts the velocity.

    Args:
      vid_bthwc: (B, T, H, W, vid_in_channels) latent input [noise | condition | mask].
      txt_blc: (B, L, txt_in_dim) text embeddings (right-padded when lengths differ).
      timestep_b: (B,) timesteps on the 0..1000 scale.
      txt_len_b: optional (B,) int valid text lengths (default: all L).
    Returns:
      (B, T, H, W, vid_out_channels) float32.
    """
    cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
    batch, frames = vid_bthwc.shape[:2]
    txt_len = txt_blc.shape[1]
    if txt_len_b is None:
      txt_len_b = jnp.full((batch,), txt_len, jnp.int32)

    tokens = patchify(vid_bthwc.astype(dtype), cfg.patch_size)
    grid = tokens.shape[1:4]
    x_vid = self.vid_in.proj(tokens.reshape(batch, -1, tokens.shape[-1])).astype(jnp.float32)
    x_txt = txt_blc.astype(dtype)
    x_txt = (self.txt_in(x_txt) if self.txt_in is not None else x_txt).astype(jnp.float32)
    emb_bd23 = self.emb_in(timestep_b).reshape(batch, cfg.vid_dim, 2, 3)

    ctx = build_context(cfg, grid, txt_len, txt_len_b)
    for block in self.blocks:
      x_vid, x_txt = block(x_vid, x_txt, emb_bd23, ctx)

    if cfg.vid_out_norm:
      # The output head reuses the attention slot of the time embedding (official cache quirk).
      x_vid = self.vid_out_ada.modulate(self.vid_out_norm(x_vid), emb_bd23[:, :, 0], "out")
    out = self.vid_out.proj(x_vid.astype(dtype)).astype(jnp.float32)
    return unpatchify(out.reshape(batch, *grid, -1), cfg.patch_size, frames)
