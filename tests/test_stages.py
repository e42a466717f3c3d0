"""Restore as separate stage programs (encode, DiT, decode chunk by chunk): outputs equal the
whole restoration in one program bit for bit, offloaded weights equal resident ones and sit in
host memory, and frames stream out before a clip's last chunk is decoded."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from seedvr2_jax.infer import clips, one_step, preprocess, restore
from seedvr2_jax.infer.options import RestoreOptions

SIZE = (18, 30)  # odd against /16: padded to 32x32 and cropped back


@pytest.fixture(scope="module")
def models(restore_models):
  return restore_models


def _options(**kwargs):
  return RestoreOptions(cache_dir="", resolution=SIZE, **kwargs)


def _reference(models, options, raw, keys):
  """The whole restoration of raw clips in one jitted program of the pure functions."""
  dit, vae, txt = models
  (dit_graph, dit_state), (vae_graph, vae_state) = nnx.split(dit), nnx.split(vae)

  def run(dit_state, vae_state, raw, keys):
    dit_, vae_ = nnx.merge(dit_graph, dit_state), nnx.merge(vae_graph, vae_state)
    lq = jax.vmap(lambda c: preprocess.preprocess(c / 255.0, SIZE, options.size_mode))(raw)
    shape = one_step.latent_shape(vae_, lq.shape)[1:]
    eps, noise = jax.vmap(lambda key: tuple(
        jax.random.normal(k, shape, jnp.float32) for k in jax.random.split(key)))(keys)
    txt_b = jnp.broadcast_to(jnp.asarray(txt), (lq.shape[0], *txt.shape))
    out = one_step.restore_clip(dit_, vae_, lq, txt_b, eps, noise, options)
    top, left, _, _ = preprocess.pad_box(*SIZE)
    return out[:, :, top:top + SIZE[0], left:left + SIZE[1]]

  return np.asarray(jax.jit(run)(dit_state, vae_state, raw, keys))


def _raw(frames, batch=1, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (batch, frames, 23, 37, 3), np.uint8)


@pytest.mark.parametrize("frames, decode_chunk, batch", [(5, 1, 1), (6, 2, 2), (9, None, 1)])
def test_stages_equal_one_program(models, frames, decode_chunk, batch):
  options = _options(decode_chunk=decode_chunk)
  restorer = one_step.Restorer(*models, options, SIZE)
  raw, keys = _raw(frames, batch), jax.random.split(jax.random.key(1), batch)
  chunks = list(restorer.stream(raw, keys))
  latents = 1 + (preprocess.padded_length(frames) - 1) // 4
  assert len(chunks) == len(one_step.decode_ranges(latents, decode_chunk))
  out = np.concatenate([np.asarray(c) for c in chunks], axis=1)
  assert out.shape == (batch, frames, *SIZE, 3)
  np.testing.assert_array_equal(out, _reference(models, options, raw, keys))
