"""Objectives that train the DiT on latents of a frozen VAE: the shared part (`DiTObjective`),
flow-matching diffusion training (SeedVR pre-training / fine-tuning) and one-step L1 regression
(losses/regression.py)."""

from __future__ import annotations

import abc
from collections.abc import Hashable

import jax
import numpy as np
from flax import nnx

from seedvr2_jax.convert import bundle as bundle_lib
from seedvr2_jax.losses import flow_matching, regression
from seedvr2_jax.models.dit.flops import forward_flops
from seedvr2_jax.models.vae import autoencoder
from seedvr2_jax.parallel import sharding
from seedvr2_jax.train import latents, start
from seedvr2_jax.train.objectives.base import Objective, Throughput, trained


class DiTObjective(Objective):
  """Trains the DiT ("dit") with AdamW/RMSProp from `config.optim` and an EMA when
  `config.ema_decay` > 0; the step encodes pixel batches with the frozen VAE (or samples
  precomputed posteriors) and pairs them with the frozen texts (train/latents.py).
  `forwards(phase)`: the model FLOPs of a step, in DiT forwards per sample."""

  def build(self) -> dict:
    c = self.config
    self.start = start.load(c, self.mesh, dit=True, abstract=self.abstract)
    self.dit_cfg = self.start.dit_cfg
    self.dit = self.start.dit
    self.trained = {"dit": trained(self.dit, c.optim, c.total_steps, ema=c.ema_decay > 0)}
    self.vae_graphdef = nnx.graphdef(nnx.eval_shape(
        lambda: autoencoder.VideoAutoencoder(self.start.vae_cfg, nnx.Rngs(0))))
    spec = sharding.batch_spec(5, sequence_axis=3 if self.mesh.shape["sequence"] > 1 else None)
    constrain = lambda x: jax.lax.with_sharding_constraint(
        x, jax.sharding.NamedSharding(self.mesh, spec))
    self._prepare = latents.make_prepare(self.vae_graphdef, encode_chunk=c.encode_chunk,
                                         constrain=constrain)
    return start.apply(latents.frozen_inputs, self.start.vae_state, self.start.txt_pos,
                       self.start.txt_neg, abstract=self.abstract)

  def prepare(self, frozen, batch, key):
    return self._prepare(frozen, batch, key)

  def forwards(self, phase: Hashable) -> int:
    return 3  # forward + backward

  def latent_shape(self, batch: dict) -> tuple[int, int, int, int]:
    """(B, T', h, w) of the latents of `batch` (pixels or precomputed moments)."""
    if "hq_moments" in batch:
      return tuple(batch["hq_moments"].shape[:4])
    vae = self.start.vae_cfg
    b, t, h, w, _ = batch["hq"].shape
    return b, vae.latent_frames(t), h // vae.spatial_factor, w // vae.spatial_factor

  def throughput(self, batch, phase) -> Throughput:
    b, *thw = self.latent_shape(batch)
    fwd = forward_flops(self.dit_cfg, tuple(thw), int(self.start.txt_pos.shape[0]))["total"]
    tokens = int(np.prod(thw)) // int(np.prod(self.dit_cfg.patch_size))
    return Throughput(b, b * tokens, self.forwards(phase) * fwd * b)

  def to_bundle(self, state, frozen, *, ema):
    params = self.params_for_export(state, "dit", ema=ema)
    text = {k: frozen[f"txt_{k}"][:int(frozen[f"txt_{k}_len"])] for k in ("pos", "neg")}
    return bundle_lib.Bundle(self.dit_cfg, self.start.vae_cfg,
                             nnx.state(self.dit.merge(params)), frozen["vae"], text["pos"],
                             text["neg"])


class DiTLossObjective(DiTObjective):
  """A DiT objective with one loss of the DiT's parameters: `loss(dit, state, inputs, key,
  phase) -> (loss, metrics)`."""

  @abc.abstractmethod
  def loss(self, dit, state, inputs, key, phase) -> tuple[jax.Array, dict]:
    """(scalar loss, metrics) of the DiT `dit` (the trained parameters merged)."""

  def loss_and_grads(self, state, frozen, inputs, key, phase):
    loss_of = lambda p: self.loss(self.dit.merge(p), state, inputs, key, phase)
    (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params["dit"])
    return {**metrics, "loss": loss}, {"dit": grads}


class Diffusion(DiTLossObjective):
  """Flow matching (losses/flow_matching.py, `config.diffusion`)."""

  name = "diffusion"

  def loss(self, dit, state, inputs, key, phase):
    cfg = flow_matching.DiffusionLossConfig(**self.config.diffusion)
    return flow_matching.diffusion_loss(dit, inputs, key, cfg)


class Regression(DiTLossObjective):
  """L1 of the one-step x0 (pure noise + LQ condition at t = T) against the HQ latent."""

  name = "regression"

  def loss(self, dit, state, inputs, key, phase):
    return regression.one_step_l1_loss(dit, inputs, key)
