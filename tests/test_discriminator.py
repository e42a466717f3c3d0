"""APT discriminator (NaDiT trunk + query heads) and the adversarial losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from seedvr2_jax.errors import ConfigError
from seedvr2_jax.losses import adversarial as adv
from seedvr2_jax.models.dit import config as dit_config
from seedvr2_jax.models.dit.nadit import NaDiT
from seedvr2_jax.models.discriminator import Discriminator, default_head_layers

SHAPE = (2, 2, 8, 8)  # (B, T, H, W) latent: token grid (2, 4, 4)
# A 2-block tiny 3B (one separate-weight block, then the video-only last block): heads (0, 1).
CFG = dit_config.official("3b", **{**dit_config.TINY["3b"], "num_layers": 2, "mm_layers": 1})


@pytest.fixture(scope="module")
def models():
  generator = NaDiT(CFG, nnx.Rngs(0))
  return generator, Discriminator.from_generator(generator, rngs=nnx.Rngs(1))


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  return normal(*SHAPE, 16), normal(*SHAPE, 17), normal(SHAPE[0], 5, 32), jnp.array([300.0, 900.0])


def _leaves(module):
  return jax.tree.leaves(nnx.state(module, nnx.Param))


def test_default_head_layers():
  assert default_head_layers(dit_config.official("7b")) == (15, 25, 35)  # APT's 16/26/36
  assert default_head_layers(dit_config.official("3b")) == (13, 22, 31)
  assert default_head_layers(dit_config.official("3b", **dit_config.TINY["3b"])) == (1, 2, 3)
  assert default_head_layers(dit_config.official("7b", **dit_config.TINY["7b"])) == (0, 1)


def test_bad_head_layers_and_numerics_raise(models):
  generator, _ = models
  for head_layers in [(2, 1), (1, 1), (0, 4), (-1, 2), ()]:
    with pytest.raises(ConfigError):
      Discriminator(generator, head_layers, rngs=nnx.Rngs(0))
  with pytest.raises(ConfigError):
    Discriminator.from_generator(generator, rngs=nnx.Rngs(0), num_layers=2)


def test_trunk_reproduces_generator_and_is_a_copy(inputs):
  generator = NaDiT(CFG, nnx.Rngs(0))
  disc = Discriminator.from_generator(generator, rngs=nnx.Rngs(1))
  assert disc.head_layers == (0, 1)
  sample, cond, txt, t = inputs
  vid = jnp.concatenate([sample, cond], axis=-1)
  gen_states, _, _ = generator.hidden_states(vid, txt, t, (0, 1))
  _, features = disc(sample, cond, txt, t)
  assert len(features) == 2
  for got, want in zip(features, gen_states):  # the same math in another program: fusion may differ
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  for d_leaf, g_leaf in zip(_leaves(disc.trunk), _leaves(generator), strict=True):
    np.testing.assert_array_equal(d_leaf, g_leaf)
    assert d_leaf.unsafe_buffer_pointer() != g_leaf.unsafe_buffer_pointer()
  # Training the trunk leaves the generator alone.
  kernel = disc.trunk.blocks[0].attn.proj_qkv.vid.kernel
  kernel[...] = kernel[...] + 1.0
  after, _, _ = generator.hidden_states(vid, txt, t, (0, 1))
  np.testing.assert_array_equal(after[1], gen_states[1])
  assert not np.allclose(disc(sample, cond, txt, t)[1][1], gen_states[1])
  # Numerics may differ from the generator's (here: rematerialised blocks).
  remat = Discriminator.from_generator(generator, rngs=nnx.Rngs(1), remat="full")
  assert remat.trunk.cfg.remat == "full" and generator.cfg.remat == "none"


def test_logits_are_per_sample(models, inputs):
  _, disc = models
  sample, cond, txt, t = inputs
  logits, features = disc(sample, cond, txt, t)
  assert logits.shape == (2,) and logits.dtype == jnp.float32
  assert [f.shape for f in features] == [(2, 32, 64)] * 2
  changed, _ = disc(sample.at[1].multiply(-1.0), cond, txt, t)
  np.testing.assert_allclose(changed[0], logits[0], atol=1e-6)
  assert abs(float(changed[1] - logits[1])) > 1e-4


def test_gradients_reach_heads_and_trunk(models, inputs):
  _, disc = models
  graphdef, state = nnx.split(disc)
  grad_fn = jax.jit(jax.grad(lambda s, *a: jnp.sum(nnx.merge(graphdef, s)(*a)[0])))
  grads = nnx.merge(graphdef, grad_fn(state, *inputs))
  norm = lambda tree: float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)))
  for name, tree in [("query", grads.heads[0].query), ("last query", grads.heads[1].query),
                     ("head mlp", grads.heads[0].mlp), ("out_norm", grads.out_norm),
                     ("out_proj", grads.out_proj), ("trunk block 0", grads.trunk.blocks[0]),
                     ("trunk last block", grads.trunk.blocks[1]), ("vid_in", grads.trunk.vid_in),
                     ("time embedding", grads.trunk.emb_in)]:
    assert norm(tree) > 0, name
  assert norm(grads.trunk.vid_out) == 0  # the generator's output head is unused


def test_rpgan_values_and_gradient_signs():
  real, fake = jnp.array([1.0, 0.0]), jnp.array([0.0, 2.0])
  softplus = lambda x: np.log1p(np.exp(x))
  np.testing.assert_allclose(adv.rpgan_d_loss(real, fake), (softplus(-1) + softplus(2)) / 2,
                             rtol=1e-6)
  np.testing.assert_allclose(adv.rpgan_g_loss(real, fake), (softplus(1) + softplus(-2)) / 2,
                             rtol=1e-6)
  d_real, d_fake = jax.grad(adv.rpgan_d_loss, argnums=(0, 1))(real, fake)
  assert np.all(d_real < 0) and np.all(d_fake > 0)  # D: raise real logits, lower fake ones
  g_real, g_fake = jax.grad(adv.rpgan_g_loss, argnums=(0, 1))(real, fake)
  assert np.all(g_fake < 0) and np.all(g_real > 0)  # G: raise fake logits


def test_approx_r1_r2():
  key = jax.random.key(1)
  x = jax.random.normal(key, (4, 3, 5))
  constant = lambda v: jnp.full((v.shape[0],), 2.0)
  assert float(adv.approx_r1(constant, x, 0.1, key)) == 0.0
  nonlinear = lambda v: jnp.sum(jnp.tanh(v), axis=(1, 2))
  assert float(adv.approx_r1(nonlinear, x, 0.1, key)) > 0
  assert float(adv.approx_r2(nonlinear, x, 0.1, key)) > 0
  # Linear D: E (D(x) - D(x + sigma eps))^2 = sigma^2 |grad D|^2.
  w = jax.random.normal(jax.random.key(2), (16,))
  linear = lambda v: v @ w
  sigma, batch = 0.01, 8192
  real = jax.random.normal(jax.random.key(3), (batch, 16))
  grad_sq = jnp.mean(jnp.sum(jnp.square(jax.vmap(jax.grad(linear))(real)), axis=-1))
  penalty = adv.approx_r1(linear, real, sigma, jax.random.key(4))
  np.testing.assert_allclose(penalty / sigma**2, grad_sq, rtol=0.06)
  clean, perturbed = jnp.array([1.0, 2.0]), jnp.array([1.5, 1.0])
  np.testing.assert_allclose(adv.approx_penalty(clean, perturbed), (0.25 + 1.0) / 2)


def test_step_logits_equal_separate_calls(models, inputs):
  _, disc = models
  sample, cond, txt, t = inputs
  real, fake = sample, 0.5 * sample[::-1]
  noise = jnp.asarray(np.random.default_rng(5).normal(size=real.shape), jnp.float32)
  args = (cond, txt, t, noise)

  graphdef, state = nnx.split(disc)
  call = jax.jit(lambda *a: nnx.merge(graphdef, state)(*a))

  def d_fn(x, cond, txt, t, noise):
    return call(adv.noise_to_timestep(x, noise, t), cond, txt, t)[0]

  key = jax.random.key(6)
  logits = adv.discriminator_step_logits(d_fn, real, fake, 0.1, key, *args)
  real_key, fake_key = jax.random.split(key)
  separate = [d_fn(real, *args), d_fn(fake, *args), d_fn(adv.perturb(real, 0.1, real_key), *args),
              d_fn(adv.perturb(fake, 0.1, fake_key), *args)]
  for got, want in zip(logits, separate, strict=True):
    np.testing.assert_allclose(got, want, atol=1e-5)
  assert abs(float(logits.real_perturbed[0] - logits.real[0])) > 0
  # Outputs with features split the same way (the generator step's D(real), D(fake)).
  (_, real_feats), (fake_logits, _) = adv.batched_call(call, [real, fake], *args[:3])
  np.testing.assert_allclose(real_feats[1], call(real, *args[:3])[1][1], atol=1e-5)
  np.testing.assert_allclose(fake_logits, call(fake, *args[:3])[0], atol=1e-5)


def test_feature_matching_and_l1():
  real = [jnp.zeros((2, 4, 3)), jnp.ones((2, 5, 3))]
  fake = [jnp.ones((2, 4, 3)), 4.0 * jnp.ones((2, 5, 3))]
  assert float(adv.feature_matching_loss(real, real)) == 0.0
  np.testing.assert_allclose(adv.feature_matching_loss(fake, real), (1.0 + 3.0) / 2)
  g_fake, g_real = jax.grad(adv.feature_matching_loss, argnums=(0, 1))(fake, real)
  assert all(float(jnp.abs(g).sum()) == 0.0 for g in g_real)
  assert all(float(jnp.abs(g).sum()) > 0.0 for g in g_fake)
  with pytest.raises(ValueError):
    adv.feature_matching_loss(fake[:1], real)
  np.testing.assert_allclose(adv.l1_loss(jnp.array([1.0, -2.0]), jnp.array([0.0, 1.0])), 2.0)


def test_discriminator_timesteps():
  key = jax.random.key(7)
  flat = adv.sample_discriminator_timesteps(key, 20000, adv.TIMESTEP_SHIFT_IMAGE)
  shifted = adv.sample_discriminator_timesteps(key, 20000, adv.TIMESTEP_SHIFT_VIDEO)
  for t in (flat, shifted):
    assert t.shape == (20000,) and float(t.min()) > 0 and float(t.max()) <= 1000
  np.testing.assert_array_equal(flat, adv.sample_discriminator_timesteps(key, 20000, 1.0))
  assert not np.array_equal(flat, adv.sample_discriminator_timesteps(jax.random.key(8), 20000,
                                                                     1.0))
  assert abs(float(flat.mean()) - 500) < 10
  assert float(shifted.mean()) > float(flat.mean()) + 200
  # Median of shift(U, 12): 12 * 0.5 / (1 + 11 * 0.5) * 1000.
  assert abs(float(jnp.median(shifted)) - 12 * 0.5 / 6.5 * 1000) < 5


def test_noise_to_timestep():
  x0, noise = jnp.ones((3, 2, 2)), -jnp.ones((3, 2, 2))
  x_t = adv.noise_to_timestep(x0, noise, jnp.array([0.0, 250.0, 1000.0]))
  np.testing.assert_allclose(x_t[:, 0, 0], [1.0, 0.5, -1.0])
