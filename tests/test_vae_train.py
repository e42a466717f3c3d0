"""VAE reconstruction training (train/vae.py): the loss is its definition, and training on real
frames lowers it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from seedvr2_jax.data import video_io
from seedvr2_jax.models.vae import autoencoder, codec
from seedvr2_jax.models.vae.config import TINY, VAEConfig
from seedvr2_jax.metrics import lpips as lpips_lib
from seedvr2_jax.train import vae as vae_train
from tests.test_restore import BIKES

CFG = VAEConfig(**TINY)


def test_kl_to_standard_normal_closed_form():
  zero = jnp.zeros((2, 3))
  assert float(vae_train.kl_to_standard_normal(zero, zero)) == 0.0
  # KL(N(2, 1) || N(0, 1)) = 2; KL(N(0, e) || N(0, 1)) = (e - 2) / 2
  assert np.isclose(float(vae_train.kl_to_standard_normal(zero + 2.0, zero)), 2.0)
  assert np.isclose(float(vae_train.kl_to_standard_normal(zero, zero + 1.0)), (np.e - 2) / 2)


def test_reconstruction_loss_is_its_definition():
  vae = autoencoder.random_init(CFG, 0)
  x = jax.random.uniform(jax.random.key(1), (1, 5, 32, 32, 3), minval=-1.0, maxval=1.0)
  key = jax.random.key(2)
  perceptual = lambda a, b: jnp.mean(jnp.abs(a - b) ** 2, axis=(1, 2, 3))  # (N,) per frame
  cfg = vae_train.VAELossConfig(l1=1.0, lpips=0.5, kl=1e-3)
  loss, metrics = vae_train.reconstruction_loss(vae, x, key, cfg, perceptual)
  mean, logvar = codec.split_moments(codec.encode(vae, x))
  z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
  recon = np.asarray(codec.decode(vae, z))
  x = np.asarray(x)
  l1 = np.mean(np.abs(recon - x))
  frames = lambda v: (v.reshape(-1, 32, 32, 3) + 1) / 2
  percept = np.mean((frames(recon.clip(-1, 1)) - frames(x)) ** 2)
  kl = 0.5 * np.mean(np.asarray(mean) ** 2 + np.exp(logvar) - 1 - np.asarray(logvar))
  np.testing.assert_allclose(float(loss), l1 + 0.5 * percept + 1e-3 * kl, rtol=1e-5)
  np.testing.assert_allclose([metrics["l1"], metrics["kl"], metrics["lpips"]],
                             [l1, kl, percept], rtol=1e-5)


def test_fit_on_real_frames_lowers_the_loss():
  frames = np.stack(list(video_io.read_frames(video_io.probe(BIKES))))[:5, :32, :64]
  batch = {"hq": np.stack([frames[:, :, :32], frames[:, :, 32:]])}  # (2, 5, 32, 32, 3)
  logged = []
  lp = lpips_lib.load_weights()
  vae = vae_train.fit(autoencoder.random_init(CFG, 0), iter(lambda: batch, None), steps=40,
                      tx=optax.adam(3e-3), cfg=vae_train.VAELossConfig(),
                      perceptual=lambda a, b: lpips_lib.lpips(lp, a, b), log_every=10,
                      write=lambda step, m: logged.append((step, m)))
  assert [s for s, _ in logged] == [10, 20, 30, 40]
  first, last = logged[0][1], logged[-1][1]
  assert last["loss"] < 0.7 * first["loss"] and last["psnr"] > first["psnr"] + 2, logged
  std = vae_train.latent_std(vae, iter(lambda: batch, None), 1)
  mean = codec.split_moments(codec.encode(vae, jnp.asarray(batch["hq"]) / 127.5 - 1))[0]
  np.testing.assert_allclose(std, np.std(np.asarray(mean)), rtol=1e-4)
