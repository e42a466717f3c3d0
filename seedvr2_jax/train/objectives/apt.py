"""Adversarial post-training (APT; SeedVR2 stage 2): a one-step generator G (the distilled DiT)
against a discriminator D (a DiT trunk with query heads, models/discriminator.py).

One jitted step makes both updates (fused), each on its own optimizer:
  G step: x0 = G(noise at t = T, LQ condition); D scores x0 and the HQ latent, both noised to a
    timestep of APT's shifted ensemble with shared noise; D is frozen (its parameters are
    constants of G's loss)
      L_G = w_gan RpGAN_G + w_l1 |x0 - hq| + w_fm sum_l |f_l(x0) - sg(f_l(hq))| / layers
  D step: on the same pre-update sample sg(x0), real and fake and their sigma-perturbed copies
    in one call of 4B samples, or one group at a time (`APTConfig.d_sequential`; its forward
    pass reuses the G step's D(real) and D(fake) logits: same parameters, same inputs)
      L_D = w_gan RpGAN_D + w_r1 approx_R1 + w_r2 approx_R2
Images (one latent frame) use sigma / timestep shift of images, clips those of videos
(losses/adversarial.py); the clip length is static, so the choice is made at trace time. Both
gradients are taken at the step's incoming state; train/step.py applies them together, each
with its own optimizer (`optim` for G, `d_optim` for D), and keeps an EMA of G.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from seedvr2_jax.diffusion import condition
from seedvr2_jax.infer.one_step import predict_x0
from seedvr2_jax.losses import adversarial as adv
from seedvr2_jax.models.discriminator import Discriminator
from seedvr2_jax.parallel.sharding import ACT_BATCH, constrain
from seedvr2_jax.train import start
from seedvr2_jax.train.objectives.base import trained
from seedvr2_jax.train.objectives.diffusion import DiTObjective


@dataclasses.dataclass(frozen=True)
class APTConfig:
  """Loss weights, perturbation sigmas and discriminator timestep shifts (paper defaults)."""

  gan: float = adv.GAN_WEIGHT
  r1: float = adv.R1_WEIGHT
  r2: float = adv.R2_WEIGHT
  l1: float = adv.L1_WEIGHT
  feature_matching: float = adv.FEATURE_MATCHING_WEIGHT
  sigma_image: float = adv.SIGMA_IMAGE
  sigma_video: float = adv.SIGMA_VIDEO
  shift_image: float = adv.TIMESTEP_SHIFT_IMAGE
  shift_video: float = adv.TIMESTEP_SHIFT_VIDEO
  d_sequential: bool = False  # D step: one sample group at a time (discriminator_grads)
  head_layers: tuple[int, ...] = ()  # D's head blocks (0-based); () = APT's relative depths
  d_remat: str = "full"  # remat policy of D's trunk


class Draws(NamedTuple):
  """The random inputs of one APT step: G's noise at t = T, D's timesteps (B,) and the noise
  that takes samples to them (shared by real and fake), and the key of R1/R2's perturbations."""

  noise: jax.Array
  t_b: jax.Array
  d_noise: jax.Array
  perturb_key: jax.Array


def draws(key: jax.Array, latents: dict, cfg: APTConfig) -> Draws:
  """`Draws` for `latents` (the image or video shift by the clip length)."""
  noise_key, t_key, d_noise_key, perturb_key = jax.random.split(key, 4)
  shape = latents["hq"].shape
  _, shift = _sigma_and_shift(cfg, shape[1])
  return Draws(jax.random.normal(noise_key, shape, jnp.float32),
               adv.sample_discriminator_timesteps(t_key, shape[0], shift),
               jax.random.normal(d_noise_key, shape, jnp.float32), perturb_key)


def _sigma_and_shift(cfg: APTConfig, latent_frames: int) -> tuple[float, float]:
  if latent_frames == 1:
    return cfg.sigma_image, cfg.shift_image
  return cfg.sigma_video, cfg.shift_video


def _score(discriminator, x, cond, txt, t_b, d_noise, txt_len):
  """(logits (B,), features) of D on `x` noised to t_b with the shared noise `d_noise`."""
  return discriminator(adv.noise_to_timestep(x, d_noise, t_b), cond, txt, t_b, txt_len)


def _score_args(batch: dict, t_b, d_noise) -> tuple:
  """`_score`'s arguments after the sample: (condition, text, t_b, d_noise, text lengths)."""
  return (condition.sr_condition(batch["lq"].astype(jnp.float32)), batch["txt_pos"], t_b,
          d_noise, batch["txt_pos_len"])


def generator_loss(generator, discriminator, batch: dict, noise, t_b, d_noise, cfg: APTConfig):
  """(L_G, (metrics, x0, (D(real), D(fake)) logits)); `discriminator` is a constant here
  (frozen during the G step). D(hq) is its own call: it does not depend on G, so its backward
  keeps no residuals."""
  hq, lq = batch["hq"].astype(jnp.float32), batch["lq"].astype(jnp.float32)
  x0 = predict_x0(generator, noise, lq, batch["txt_pos"], batch["txt_pos_len"])
  args = _score_args(batch, t_b, d_noise)
  (fake_logits, fake_feats), (real_logits, real_feats) = (
      _score(discriminator, x, *args) for x in (x0, hq))
  gan = adv.rpgan_g_loss(real_logits, fake_logits)
  l1 = adv.l1_loss(x0, hq)
  fm = adv.feature_matching_loss(fake_feats, real_feats)
  loss = cfg.gan * gan + cfg.l1 * l1 + cfg.feature_matching * fm
  metrics = {"g/gan": gan, "g/l1": l1, "g/feature_matching": fm,
             "d/real_logit_g_step": jnp.mean(real_logits),
             "d/fake_logit_g_step": jnp.mean(fake_logits)}
  return loss, (metrics, x0, (real_logits, fake_logits))


def discriminator_loss(logits: adv.StepLogits, cfg: APTConfig):
  """(L_D, metrics) from the D step's logits."""
  gan = adv.rpgan_d_loss(logits.real, logits.fake)
  r1 = adv.approx_penalty(logits.real, logits.real_perturbed)
  r2 = adv.approx_penalty(logits.fake, logits.fake_perturbed)
  loss = cfg.gan * gan + cfg.r1 * r1 + cfg.r2 * r2
  return loss, {"d/gan": gan, "d/r1": r1, "d/r2": r2, "d/real_logit": jnp.mean(logits.real),
                "d/fake_logit": jnp.mean(logits.fake)}


def discriminator_grads(d_graphdef, d_params, d_rest, batch: dict, fake_x0, t_b, d_noise, key,
                        cfg: APTConfig, clean_logits, grads_sharding=None):
  """((L_D, metrics), dL_D/d_params) on the HQ latent, the (constant) generated sample and
  their sigma-perturbed copies.

  Batched (default): the four sample groups in one call of 4B samples. `cfg.d_sequential`: the
  logits of the perturbed groups first (forward only; `clean_logits`, (D(real), D(fake)) at
  `d_params`, come from the G step), then one group at a time under `lax.scan`, a VJP with that
  group's logit gradients accumulated into a sum placed as `grads_sharding` (D's parameter
  shardings; None: left to the compiler): a quarter of the activation memory, for one more
  forward per perturbed group. Equal up to float summation order."""
  hq = batch["hq"].astype(jnp.float32)
  sigma, _ = _sigma_and_shift(cfg, hq.shape[1])
  args = _score_args(batch, t_b, d_noise)
  logits_of = lambda p, x, *a: _score(nnx.merge(d_graphdef, p, d_rest), x, *a)[0]
  fake = jax.lax.stop_gradient(fake_x0)
  if not cfg.d_sequential:
    loss_of = lambda p: discriminator_loss(adv.discriminator_step_logits(
        lambda x, *a: logits_of(p, x, *a), hq, fake, sigma, key, *args), cfg)
    return jax.value_and_grad(loss_of, has_aux=True)(d_params)
  # (group, B, ...) with the samples over the batch axes, as a step's batch.
  groups = lambda x: constrain(x, None, ACT_BATCH)
  samples = adv.step_samples(hq, fake, sigma, key)
  stacked = groups(jnp.stack(samples))
  perturbed = jax.lax.map(lambda x: logits_of(d_params, x, *args),
                          groups(jnp.stack([samples.real_perturbed, samples.fake_perturbed])))
  logits = jnp.stack([*map(jax.lax.stop_gradient, clean_logits), *perturbed])
  (loss, metrics), logit_grads = jax.value_and_grad(
      lambda l: discriminator_loss(adv.StepLogits(*l), cfg), has_aux=True)(logits)
  placed = ((lambda tree: tree) if grads_sharding is None else
            (lambda tree: jax.lax.with_sharding_constraint(tree, grads_sharding)))

  def accumulate(grads, group):
    x, g = group
    _, vjp = jax.vjp(lambda p: logits_of(p, x, *args), d_params)
    return placed(jax.tree.map(jnp.add, grads, vjp(g)[0])), None

  zeros = placed(jax.tree.map(jnp.zeros_like, d_params))
  grads, _ = jax.lax.scan(accumulate, zeros, (stacked, groups(logit_grads)))
  return (loss, metrics), grads


class APT(DiTObjective):
  """G is the DiT ("dit"); D ("discriminator", metrics prefixed "d/") is made from G's starting
  weights with query heads (models/discriminator.py)."""

  name = "apt"

  def build(self) -> dict:
    frozen = super().build()
    c = self.config
    self.cfg = APTConfig(**c.apt)
    disc = start.apply(lambda generator: Discriminator.from_generator(
        generator, self.cfg.head_layers or None, rngs=nnx.Rngs(c.seed + 3),
        remat=self.cfg.d_remat), self.dit.merge(), abstract=self.abstract)
    self.disc = start.place(disc, self.mesh, start.rules_of(c))
    self.trained["discriminator"] = trained(self.disc, c.d_optim, c.total_steps,
                                            metric_prefix="d/")
    return frozen

  def loss_and_grads(self, state, frozen, inputs, key, phase):
    d = draws(key, inputs, self.cfg)
    frozen_d = self.disc.merge(state.params["discriminator"])
    g_loss_of = lambda p: generator_loss(self.dit.merge(p), frozen_d, inputs, d.noise, d.t_b,
                                         d.d_noise, self.cfg)
    (g_loss, (g_metrics, x0, clean_logits)), g_grads = jax.value_and_grad(
        g_loss_of, has_aux=True)(state.params["dit"])
    (d_loss, d_metrics), d_grads = discriminator_grads(
        self.disc.graphdef, state.params["discriminator"], self.disc.rest, inputs, x0, d.t_b,
        d.d_noise, d.perturb_key, self.cfg, clean_logits, self.disc.params_sharding)
    return ({**g_metrics, **d_metrics, "loss": g_loss, "d/loss": d_loss},
            {"dit": g_grads, "discriminator": d_grads})

  def forwards(self, phase):
    # G: forward + backward (3); D in the G step: 2 samples forward, backward on one (4); D step:
    # 4 samples forward + backward (12). D counted as a full trunk forward.
    return 3 + 4 + 12
