"""VAE reconstruction training (losses/reconstruction.py, the trainer's `vae` objective): the loss
is its definition, training on real frames lowers it, and runs resume exactly."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from seedvr2_jax import cli, config_lib
from seedvr2_jax.data import video_io
from seedvr2_jax.losses import reconstruction
from seedvr2_jax.models.vae import autoencoder, codec
from seedvr2_jax.models.vae.config import TINY, VAEConfig
from seedvr2_jax.train import loop
from seedvr2_jax.train.objectives.vae import latent_std
from tests.test_restore import BIKES
from tests.test_train import TINY as TINY_CONFIG
from tests.test_train import assert_same_checkpoint

CFG = VAEConfig(**TINY)


def test_kl_to_standard_normal_closed_form():
  zero = jnp.zeros((2, 3))
  assert float(reconstruction.kl_to_standard_normal(zero, zero)) == 0.0
  # KL(N(2, 1) || N(0, 1)) = 2; KL(N(0, e) || N(0, 1)) = (e - 2) / 2
  assert np.isclose(float(reconstruction.kl_to_standard_normal(zero + 2.0, zero)), 2.0)
  assert np.isclose(float(reconstruction.kl_to_standard_normal(zero, zero + 1.0)), (np.e - 2) / 2)


def test_reconstruction_loss_is_its_definition():
  vae = autoencoder.random_init(CFG, 0)
  x = jax.random.uniform(jax.random.key(1), (1, 5, 32, 32, 3), minval=-1.0, maxval=1.0)
  key = jax.random.key(2)
  perceptual = lambda a, b: jnp.mean(jnp.abs(a - b) ** 2, axis=(1, 2, 3))  # (N,) per frame
  cfg = reconstruction.ReconstructionConfig(l1=1.0, lpips=0.5, kl=1e-3)
  loss, metrics = reconstruction.reconstruction_loss(vae, x, key, cfg, perceptual)
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


class _OneBatch:
  """The trainer's batch iterator over one fixed batch of pixels."""

  def __init__(self, batch):
    self.batch, self.index = batch, 0

  def __next__(self):
    self.index += 1
    return self.batch

  def get_state(self):
    return {"index": self.index}

  def set_state(self, state):
    self.index = state["index"]

  def metrics(self):
    return {}

  def close(self):
    pass


def test_vae_objective_on_real_frames_lowers_the_loss(tmp_path):
  frames = np.stack(list(video_io.read_frames(video_io.probe(BIKES))))[:5, :32, :64]
  batch = {"hq": np.stack([frames[:, :, :32], frames[:, :, 32:]])}  # (2, 5, 32, 32, 3)
  config = config_lib.load_config(TINY_CONFIG + ":vae")
  config.update(total_steps=40, log_every=10, ema_decay=0.0)
  config.optim.update(lr=3e-3, warmup_steps=0, weight_decay=0.0, clip_norm=0.0)
  run = loop.train(config, str(tmp_path), lambda run: _OneBatch(batch))
  logged = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in logged] == [10, 20, 30, 40]
  first, last = logged[0], logged[-1]
  assert last["loss"] < 0.7 * first["loss"] and last["psnr"] > first["psnr"] + 2, logged
  vae = run.objective.vae.merge(run.state.params["vae"])
  std = latent_std(vae, iter(lambda: batch, None), 1)
  mean = codec.split_moments(codec.encode(vae, jnp.asarray(batch["hq"]) / 127.5 - 1))[0]
  np.testing.assert_allclose(std, np.std(np.asarray(mean)), rtol=1e-4)


def test_vae_objective_resumes_exactly_through_the_train_command(tmp_path):
  """configs/tiny.py:vae on real clips: checkpoints every 2 steps; 2 + 2 steps equal 4."""
  train = lambda workdir, steps: cli.main([
      "train", "--config", TINY_CONFIG + ":vae", "--workdir", str(workdir),
      f"--config.total_steps={steps}", "--config.checkpoint_every=2", "--config.log_every=2"])
  assert train(tmp_path / "a", 4) == 0
  assert train(tmp_path / "b", 2) == 0 and train(tmp_path / "b", 4) == 0
  assert sorted(os.listdir(tmp_path / "b" / "checkpoints")) == ["2", "4"]
  logged = [json.loads(line) for line in open(tmp_path / "b" / "metrics.jsonl")]
  assert [r["step"] for r in logged] == [2, 4] and all(np.isfinite(r["loss"]) for r in logged)
  assert_same_checkpoint(config_lib.load_config(TINY_CONFIG + ":vae"), tmp_path / "a",
                         tmp_path / "b", 4)
