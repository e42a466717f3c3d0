"""Reconstruction training of the causal video VAE ("vae"): L1 + LPIPS + KL of the posterior
sample's decoding against the HQ clip of each pixel batch (losses/reconstruction.py,
`config.vae_loss`), AdamW from `config.optim`, an EMA when `config.ema_decay` > 0. Starts from
the VAE of `init.checkpoint` or a random one; its export pairs the trained VAE with the DiT and
texts a DiT run would start from (the checkpoint's, or random ones), so that the next stage
(`init.checkpoint`) trains the DiT on these latents."""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seedvr2_jax.convert import bundle as bundle_lib
from seedvr2_jax.diffusion import condition
from seedvr2_jax.errors import ConfigError
from seedvr2_jax.losses import reconstruction
from seedvr2_jax.metrics import lpips as lpips_lib
from seedvr2_jax.models.vae import autoencoder, codec
from seedvr2_jax.train import start
from seedvr2_jax.train.objectives.base import Objective, Throughput, trained
from seedvr2_jax.utils.flops import count_flops


class VAEReconstruction(Objective):

  name = "vae"

  def build(self) -> dict:
    c = self.config
    if c.data.latents:
      raise ConfigError("objective vae trains on pixels: unset data.latents")
    self.cfg = reconstruction.ReconstructionConfig(**c.vae_loss)
    begin = start.load(c, self.mesh, dit=False, abstract=self.abstract)
    self.vae_cfg = begin.vae_cfg
    graphdef = nnx.graphdef(nnx.eval_shape(
        lambda: autoencoder.VideoAutoencoder(self.vae_cfg, nnx.Rngs(0))))
    self.vae = start.place(nnx.merge(graphdef, begin.vae_state), self.mesh, start.rules_of(c))
    self.trained = {"vae": trained(self.vae, c.optim, c.total_steps, ema=c.ema_decay > 0)}
    self._clip_flops: dict[tuple[int, ...], int] = {}
    return {"lpips": lpips_lib.load_weights()} if self.cfg.lpips else {}

  def prepare(self, frozen, batch, key):
    return {"hq": condition.to_unit(batch["hq"])}

  def loss_and_grads(self, state, frozen, inputs, key, phase):
    perceptual = None
    if self.cfg.lpips:  # a training loss: the backend's default matmul precision
      perceptual = lambda a, b: lpips_lib.lpips(frozen["lpips"], a, b, jax.lax.Precision.DEFAULT)
    loss_of = lambda p: reconstruction.reconstruction_loss(self.vae.merge(p), inputs["hq"], key,
                                                           self.cfg, perceptual)
    (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params["vae"])
    return {**metrics, "loss": loss}, {"vae": grads}

  def throughput(self, batch, phase) -> Throughput:
    """FLOPs: 3 x (encode + decode) of each clip, counted once per clip shape."""
    shape = tuple(batch["hq"].shape)
    if shape[1:] not in self._clip_flops:
      vae = self.vae.merge()
      clip = jax.ShapeDtypeStruct((1, *shape[1:]), jnp.float32)
      self._clip_flops[shape[1:]] = count_flops(
          lambda x: codec.decode(vae, codec.split_moments(codec.encode(vae, x))[0]), clip)
    return Throughput(shape[0], 0, 3 * self._clip_flops[shape[1:]] * shape[0])

  def to_bundle(self, state, frozen, *, ema):
    vae_state = nnx.state(self.vae.merge(self.params_for_export(state, "vae", ema=ema)))
    begin = start.load(self.config, self.mesh, dit=True)
    return bundle_lib.Bundle(begin.dit_cfg, self.vae_cfg, nnx.state(begin.dit.merge()), vae_state,
                             begin.txt_pos, begin.txt_neg)


def latent_std(vae: autoencoder.VideoAutoencoder, batches: Iterator[dict], count: int) -> float:
  """Standard deviation of the posterior means over `count` batches of HQ clips: the scaling
  factor that makes the DiT's latents unit-variance (as Stable Diffusion chose its 0.18215)."""
  encode = jax.jit(lambda x: codec.split_moments(codec.encode(vae, condition.to_unit(x)))[0])
  means = [np.asarray(encode(jnp.asarray(next(batches)["hq"]))) for _ in range(count)]
  return float(np.std(np.concatenate([m.ravel() for m in means])))
