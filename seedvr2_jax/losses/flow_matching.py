"""Flow-matching (v_lerp) diffusion loss of the SeedVR DiT on latent clips.

  t ~ logit-normal (loc, scale), shifted by the clip's resolution shift; x_t = lerp(x0, noise, t)
  condition = [LQ latent noised to t_c ~ U[0, cond_noise_t] | ones]; text = positive embedding,
  replaced by the negative one with probability `text_dropout` (trains the CFG branch)
  loss = mean (DiT(x_t, condition, text, t) - (noise - x0))^2
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from seedvr2_jax.diffusion import condition, schedule


@dataclasses.dataclass(frozen=True)
class DiffusionLossConfig:
  """Timestep sampling (logit-normal loc/scale, resolution shift on/off), condition noise
  augmentation (max timestep, 0..T) and text dropout probability."""

  loc: float = 0.0
  scale: float = 1.0
  resolution_shift: bool = True
  cond_noise_t: float = 0.0
  text_dropout: float = 0.1


def clip_shift(latent_shape, spatial: int = 8, temporal: int = 4) -> float:
  """The resolution shift of a latent (B, T', h, w, C) clip, from its pixel size."""
  _, t, h, w, _ = latent_shape
  return schedule.resolution_shift((t - 1) * temporal + 1, h * spatial, w * spatial)


def select_text(key: jax.Array, batch: dict, p_drop: float):
  """Per sample: the negative text with probability p_drop, else the positive one.
  batch holds `txt_pos`/`txt_neg` (B, L, D), right-padded to one L, and their (B,) lengths
  `txt_pos_len`/`txt_neg_len`. Returns (embedding (B, L, D), lengths (B,))."""
  drop = jax.random.bernoulli(key, p_drop, (batch["txt_pos"].shape[0],))
  txt = jnp.where(drop[:, None, None], batch["txt_neg"], batch["txt_pos"])
  return txt, jnp.where(drop, batch["txt_neg_len"], batch["txt_pos_len"])


def diffusion_loss(dit, batch: dict, key: jax.Array, cfg: DiffusionLossConfig):
  """batch: `hq` (B, T', h, w, C) and `lq` latents, texts as in `select_text`.
  Returns (scalar loss, metrics dict)."""
  x0, lq = batch["hq"].astype(jnp.float32), batch["lq"].astype(jnp.float32)
  t_key, n_key, c_key, d_key = jax.random.split(key, 4)
  shift_by = clip_shift(x0.shape) if cfg.resolution_shift else 1.0
  t = schedule.sample_logit_normal(t_key, x0.shape[0], cfg.loc, cfg.scale, shift_by)
  noise = jax.random.normal(n_key, x0.shape, jnp.float32)
  x_t = schedule.add_noise(x0, noise, t)
  cond = condition.sr_condition(condition.augment(lq, c_key, cfg.cond_noise_t, shift_by))
  txt, txt_len = select_text(d_key, batch, cfg.text_dropout)
  v = dit(condition.model_input(x_t, cond), txt, t, txt_len)
  loss = jnp.mean(jnp.square(v - schedule.velocity(x0, noise)))
  return loss, {"loss": loss, "t_mean": jnp.mean(t)}
