"""Data batch -> the latent batch the losses read (inside the jitted step).

Pixel batches: `hq` (B, T, H, W, 3) uint8 and `lq` (B, T, h, w, 3) uint8 (h, w <= H, W: the LQ
clip is resized to the HQ size, as the inference pipeline resizes its input to the output size);
both are VAE-encoded (posterior sample x 0.9152, the frozen VAE). Precomputed batches:
`hq_moments` / `lq_moments` (B, T', H/8, W/8, 2C) posterior mean | logvar, sampled here.
Text: the positive and negative embeddings of `frozen`, broadcast over the batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from seedvr2_jax.diffusion import condition
from seedvr2_jax.models.vae import codec


def pad_text(emb_lc: jnp.ndarray, length: int) -> jnp.ndarray:
  """(L, D) -> (length, D), zero-padded on the right."""
  return jnp.pad(jnp.asarray(emb_lc, jnp.float32), ((0, length - emb_lc.shape[0]), (0, 0)))


def frozen_inputs(vae_state, txt_pos_lc, txt_neg_lc) -> dict:
  """The step's non-trained inputs: VAE state and both texts padded to one length."""
  length = max(txt_pos_lc.shape[0], txt_neg_lc.shape[0])
  return {"vae": vae_state, "txt_pos": pad_text(txt_pos_lc, length),
          "txt_neg": pad_text(txt_neg_lc, length),
          "txt_pos_len": jnp.int32(txt_pos_lc.shape[0]),
          "txt_neg_len": jnp.int32(txt_neg_lc.shape[0])}


def make_prepare(vae_graphdef, *, encode_chunk: int | None = None, constrain=lambda x: x):
  """prepare(frozen, batch, key) -> {hq, lq: (B, T', h, w, C) scaled latents, texts}.
  `constrain` places the latents on the mesh (e.g. width over "sequence")."""

  def sample(moments, key, vae):
    mean, logvar = codec.split_moments(moments)
    z = codec.sample_posterior(mean, logvar, key=key)
    return constrain(z * vae.cfg.scaling_factor + vae.cfg.shifting_factor)

  def prepare(frozen: dict, batch: dict, key: jax.Array) -> dict:
    vae = nnx.merge(vae_graphdef, frozen["vae"])
    hq_key, lq_key = jax.random.split(key)
    if "hq_moments" in batch:
      moments = batch["hq_moments"], batch["lq_moments"]
    else:
      hq = condition.to_unit(batch["hq"])
      lq = condition.lq_pixels_at(condition.to_unit(batch["lq"]), hq.shape)
      encode = lambda x: jax.lax.stop_gradient(codec.encode(vae, x, chunk_frames=encode_chunk))
      moments = encode(hq), encode(lq)
    batch_size = moments[0].shape[0]
    texts = {k: jnp.broadcast_to(frozen[k], (batch_size, *frozen[k].shape))
             for k in ("txt_pos", "txt_neg", "txt_pos_len", "txt_neg_len")}
    return {"hq": sample(moments[0], hq_key, vae), "lq": sample(moments[1], lq_key, vae),
            **texts}

  return prepare
