"""One-step regression: the generator's x0 at t = T (pure noise plus the LQ condition, as
`restore` runs it) pulled to the HQ latent with L1, no teacher and no discriminator. A cheap
fine-tuning of a distilled one-step model for fidelity (APT's L1 term alone)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seedvr2_jax.infer.one_step import predict_x0


def one_step_l1_loss(dit, batch: dict, key: jax.Array):
  """batch: `hq`, `lq` latents (B, T', h, w, C) and the positive text. (loss, metrics)."""
  hq = batch["hq"].astype(jnp.float32)
  noise = jax.random.normal(key, hq.shape, jnp.float32)
  x0 = predict_x0(dit, noise, batch["lq"].astype(jnp.float32), batch["txt_pos"],
                  batch["txt_pos_len"])
  loss = jnp.mean(jnp.abs(x0 - hq))
  return loss, {"loss": loss}
