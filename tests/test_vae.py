"""Causal video VAE: chunked == one pass, frame/size rules, tiling, bf16, converter names."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import PARITY_A
from seedvr2_jax.convert import nnx_map
from seedvr2_jax.convert import vae as vae_convert
from seedvr2_jax.convert.state_dict import open_state_dict
from seedvr2_jax.errors import CheckpointError, ConfigError, InputError
from seedvr2_jax.models.vae import autoencoder, codec, layers, tiling
from seedvr2_jax.models.vae import config as vae_config
from seedvr2_jax.models.vae.layers import CausalState


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def official_state_dict():
  sd = open_state_dict(os.path.join(PARITY_A, "vae.safetensors"))
  return {k: np.array(sd[k]) for k in sd}


@pytest.fixture(scope="module")
def vae_cfg():
  with open(os.path.join(PARITY_A, "config.json")) as f:
    return vae_config.from_official(json.load(f)["vae"]["config"])


@pytest.fixture(scope="module")
def vae(official_state_dict, vae_cfg):
  return vae_convert.load_model(official_state_dict, vae_cfg)


def _video(frames, h=32, w=48, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (1, frames, h, w, 3)),
                     jnp.float32)


@pytest.mark.parametrize("frames,chunk", [(9, 4), (13, 8), (21, 8), (9, 16)])
def test_chunked_encode_equals_one_pass(vae, frames, chunk):
  x = _video(frames)
  one = jax.jit(lambda x: codec.encode(vae, x))(x)
  chunked = jax.jit(lambda x: codec.encode(vae, x, chunk_frames=chunk))(x)
  assert chunked.shape == one.shape == (1, (frames - 1) // 4 + 1, 4, 6, 32)
  assert _rel(chunked, one) < 1e-5


@pytest.mark.parametrize("latents,chunk", [(3, 1), (4, 2), (6, 2)])
def test_chunked_decode_equals_one_pass(vae, latents, chunk):
  z = jnp.asarray(np.random.default_rng(latents).normal(size=(1, latents, 4, 6, 16)), jnp.float32)
  one = jax.jit(lambda z: codec.decode(vae, z))(z)
  chunked = jax.jit(lambda z: codec.decode(vae, z, chunk_latents=chunk))(z)
  assert chunked.shape == one.shape == (1, 4 * (latents - 1) + 1, 32, 48, 3)
  assert _rel(chunked, one) < 1e-5


@pytest.mark.parametrize("shape,message", [
    ((1, 6, 32, 48, 3), "needs 4n\\+1 frames"),
    ((1, 9, 30, 48, 3), "multiple of 8"),
    ((1, 9, 32, 48), r"must be \(B, T, H, W, 3\)"),
])
def test_bad_pixels_give_clear_errors(vae, shape, message):
  with pytest.raises(InputError, match=message):
    codec.encode(vae, jnp.zeros(shape))


def test_bad_chunk_and_tile_sizes_are_rejected(vae):
  with pytest.raises(ConfigError, match="multiple of 4"):
    codec.encode(vae, _video(9), chunk_frames=6)
  with pytest.raises(ConfigError, match="multiples of 8"):
    codec.encode(vae, _video(9), tile_px=(20, 24))
  with pytest.raises(InputError, match="latents must be"):
    codec.decode(vae, jnp.zeros((1, 3, 4, 6, 8)))


def test_posterior_sampling():
  mean, logvar = codec.split_moments(jnp.concatenate(
      [jnp.full((2, 3), 0.5), jnp.array([[-40.0, 0.0, 30.0]] * 2)], -1))
  np.testing.assert_allclose(logvar[0], [-30.0, 0.0, 20.0])
  np.testing.assert_array_equal(codec.sample_posterior(mean, logvar), mean)
  noise = jnp.ones((2, 3))
  np.testing.assert_allclose(codec.sample_posterior(mean, logvar, noise)[0],
                             0.5 + np.exp(0.5 * np.array([-30.0, 0.0, 20.0])), rtol=1e-6)
  a = codec.sample_posterior(mean, logvar, key=jax.random.key(1))
  b = codec.sample_posterior(mean, logvar, key=jax.random.key(1))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, codec.sample_posterior(mean, logvar, key=jax.random.key(2)))


def test_tile_weights_partition_unity_and_local_ops_are_exact():
  plan = tiling.tile_plan((10, 13), (4, 6), (2, 3))
  assert plan.starts == ((0, 2, 4, 6), (0, 3, 6, 7))
  weights = plan.weights(8)
  total = np.zeros((80, 104))
  for (y, x), w in zip(plan.origins(), weights):
    total[8 * y:8 * y + 32, 8 * x:8 * x + 48] += w
  np.testing.assert_allclose(total, 1.0, rtol=1e-6)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 3, 80, 104, 2)), jnp.float32)
  pool = lambda v, state: v.reshape(*v.shape[:2], v.shape[2] // 8, 8, v.shape[3] // 8, 8,
                                    2).mean((3, 5))
  up = lambda v, state: jnp.repeat(jnp.repeat(v, 8, 2), 8, 3)
  z = pool(x, None)
  np.testing.assert_allclose(tiling.tiled(lambda v: pool(v, None), plan, 8, 1)(x), z,
                             atol=1e-6)
  np.testing.assert_allclose(tiling.tiled(lambda v: up(v, None), plan, 1, 8)(z), up(z, None),
                             atol=1e-6)


def _conv_stack(*modules):
  """A step(x, state) running `modules` in order, with the per-conv cache keys the VAE sets."""
  for i, module in enumerate(modules):
    for path, node in nnx.iter_graph(module):
      if isinstance(node, layers.CausalConv3d):
        node.cache_key = "/".join(map(str, (i, *path)))
  return lambda x, state: functools.reduce(lambda h, m: m(h, state), modules, x)


@pytest.mark.parametrize("direction", ["encode", "decode"])
def test_conv_stack_tiled_with_its_reach_in_the_margin_equals_untiled(direction):
  """Causal convs (3x3 kernels) with strides 1 and 2: encode-like (4 input pixels per latent)
  and decode-like (an upsampler: 2 output pixels per latent). A tile's outputs are wrong within
  the stack's reach of an inner edge (zero padding instead of the neighbour's pixels); the blend
  gives them weight 0 when that reach fits in a quarter of the overlap, and then the tiled
  output equals the untiled one. With a margin one latent smaller it does not.

  Reach per axis, in latents (the plan's unit):
    encode: latent n reads input pixels [4n - 7, 4n + 13], so it is wrong within 2 latents of
      a tile's left edge and 3 of its right edge: exact from an overlap of 12 (margin 3);
    decode: output pixel p reads latents [p // 2 - 2, (p + 2) // 2 + 1], wrong within 2
      latents of either edge: exact from an overlap of 8 (margin 2)."""
  cfg = vae_config.VAEConfig()
  rngs = nnx.Rngs(0)
  conv = lambda cin, cout, kernel=(3, 3, 3), **kw: layers.CausalConv3d(cfg, cin, cout, kernel,
                                                                       rngs=rngs, **kw)
  down = dict(stride=(2, 2, 2), spatial_pad=((0, 1), (0, 1)))
  if direction == "encode":
    step = _conv_stack(conv(3, 4), conv(4, 4, **down), conv(4, 4),
                       conv(4, 4, (1, 3, 3), stride=(1, 2, 2), spatial_pad=((0, 1), (0, 1))),
                       conv(4, 2))
    x, scales, tile, exact = _video(5, 96, 128), (4, 1), (16, 20), 12
  else:
    step = _conv_stack(conv(2, 4), layers.Upsample3D(cfg, 4, False, rngs=rngs), conv(4, 3))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 3, 24, 32, 2)), jnp.float32)
    scales, tile, exact = (1, 2), (12, 16), 8
  untiled = step(x, CausalState())
  errors = {}
  for overlap in (exact - 4, exact):
    plan = tiling.tile_plan((24, 32), tile, (overlap, overlap))
    assert plan.count >= 4 and plan.margin == (overlap // 4,) * 2
    tiled = tiling.tiled(lambda v: step(v, CausalState()), plan, *scales)(x)
    errors[overlap] = _rel(tiled, untiled)
  assert errors[exact] < 1e-6 and errors[exact - 4] > 1e-3, errors


def test_single_tile_equals_untiled(vae):
  x = _video(9)
  np.testing.assert_array_equal(codec.encode(vae, x, tile_px=(32, 48)), codec.encode(vae, x))


def _chunk_major_tiles(step, plan, in_scale, out_scale):
  """Reference: the chunk-major tiling that `tiling.tiled` replaced. Wraps a chunk step so that
  every temporal chunk runs all tiles (each with its own caches, stacked in the carry) and
  blends them."""
  th, tw = plan.tile[0] * in_scale, plan.tile[1] * in_scale
  weights = plan.weights(out_scale)

  def run(x, state):
    tiles = jnp.stack([x[:, :, y * in_scale:y * in_scale + th, c * in_scale:c * in_scale + tw]
                       for y, c in plan.origins()])

    def one(args):
      tile_state = CausalState(args[1])
      return step(args[0], tile_state), tile_state.next

    ys, state.next = jax.lax.map(one, (tiles, state.prev))
    out = jnp.zeros((*ys.shape[1:3], *(n * out_scale for n in plan.size), ys.shape[-1]))
    for (y, c), y_tile, w in zip(plan.origins(), ys, weights):
      out = out.at[:, :, y * out_scale:y * out_scale + w.shape[0],
                   c * out_scale:c * out_scale + w.shape[1]].add(y_tile * w[None, None, ..., None])
    return out.astype(ys.dtype)

  return run


# A two-block VAE (2x spatial, 2x temporal): compiles fast and runs every codec path.
_SMALL_VAE = vae_config.VAEConfig(block_out_channels=(8, 8), layers_per_block=1,
                                  norm_num_groups=4, temporal_scale_num=1, latent_channels=4)
_TILES = dict(tile_px=(8, 12), overlap_px=(4, 4))  # of a 16x20 clip: 3 x 2 tiles
# Encode 7 frames in chunks of 4 (first frame, one full chunk, a remainder of 2); decode 4
# latents in chunks of 2 (first, one full, a remainder of 1).
_CLIPS = {"encode": ((1, 7, 16, 20, 3), 4), "decode": ((1, 4, 8, 10, 4), 2)}


@pytest.fixture(scope="module")
def small_vae():
  return autoencoder.VideoAutoencoder(_SMALL_VAE, nnx.Rngs(0))


def _tiled(vae, direction, chunk, *, chunk_major=False):
  """The tiled encode / decode of `_CLIPS[direction]` (tile-major, or the chunk-major reference),
  compiled."""
  shape, _ = _CLIPS[direction]
  if chunk_major:
    plan = codec._tile_plan(vae, (8, 10), _TILES["tile_px"], _TILES["overlap_px"])
    assert plan.count == 6
    step, scales = ((vae.encode_chunk, (2, 1)) if direction == "encode" else
                    (vae.decode_chunk, (1, 2)))
    fn = functools.partial(codec._chunked, _chunk_major_tiles(step, plan, *scales), chunk=chunk)
  elif direction == "encode":
    fn = lambda v: codec.encode(vae, v, chunk_frames=chunk, **_TILES)
  else:
    fn = lambda v: codec.decode(vae, v, chunk_latents=chunk, **_TILES)
  return jax.jit(fn).lower(jax.ShapeDtypeStruct(shape, jnp.float32)).compile()


@pytest.fixture(scope="module")
def tiled_decodes(small_vae):
  chunk = _CLIPS["decode"][1]
  return {"tile_major": _tiled(small_vae, "decode", chunk),
          "chunk_major": _tiled(small_vae, "decode", chunk, chunk_major=True)}


@pytest.mark.parametrize("direction", ["encode", "decode"])
def test_tile_major_equals_chunk_major(small_vae, tiled_decodes, direction):
  """Tile-major tiling, with chunks (and a remainder) and in one pass, equals the chunk-major
  reference with chunks (fp32: max difference about 1e-6 of the largest value)."""
  shape, chunk = _CLIPS[direction]
  x = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, shape), jnp.float32)
  if direction == "encode":
    chunked = _tiled(small_vae, direction, chunk)
    reference = _tiled(small_vae, direction, chunk, chunk_major=True)
  else:
    chunked, reference = tiled_decodes["tile_major"], tiled_decodes["chunk_major"]
  want = np.asarray(reference(x))
  for got in (chunked(x), _tiled(small_vae, direction, None)(x)):
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_tile_major_decode_needs_less_memory_than_chunk_major(tiled_decodes):
  """XLA's temporary memory: one tile's caches and output against all six tiles'."""
  temp = {name: compiled.memory_analysis().temp_size_in_bytes
          for name, compiled in tiled_decodes.items()}
  assert temp["tile_major"] < 0.5 * temp["chunk_major"], temp


def test_bf16_tracks_float32(official_state_dict, vae_cfg):
  vae16 = vae_convert.load_model(official_state_dict,
                                 vae_config.VAEConfig(**{**vae_cfg.__dict__, "dtype": "bfloat16"}))
  vae32 = vae_convert.load_model(official_state_dict, vae_cfg)
  x = _video(9)
  m16, m32 = codec.encode(vae16, x), codec.encode(vae32, x)
  assert m16.dtype == jnp.bfloat16 and _rel(m16, m32) < 5e-2
  z = codec.split_moments(m32)[0]
  assert _rel(codec.decode(vae16, z), codec.decode(vae32, z)) < 5e-2


def test_deprecated_attention_names_load(official_state_dict, vae_cfg):
  renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
  old = {}
  for key, value in official_state_dict.items():
    for new, dep in renames.items():
      key = key.replace(f"attentions.0.{new}.", f"attentions.0.{dep}.")
    old[key] = value
  assert any(".query." in k for k in old)
  _, state_new = vae_convert.load_state(official_state_dict, vae_cfg)
  _, state_old = vae_convert.load_state(old, vae_cfg)
  for a, b in zip(jax.tree.leaves(state_new), jax.tree.leaves(state_old)):
    np.testing.assert_array_equal(a, b)
  exported = {k: np.asarray(v) for k, v in nnx_map.export_state(state_old).items()}
  assert set(exported) == set(official_state_dict)
  assert all(np.array_equal(exported[k], v) for k, v in official_state_dict.items())


def test_vae_state_dict_errors(official_state_dict, vae_cfg):
  sd = dict(official_state_dict)
  sd.pop("decoder.conv_out.bias")
  sd["encoder.conv_in.weight"] = np.zeros((8, 3, 1, 3, 3), np.float32)
  with pytest.raises(CheckpointError, match="missing keys: decoder.conv_out.bias.*mis-shaped "
                     r"keys: encoder.conv_in.weight \(8, 3, 1, 3, 3\)"):
    vae_convert.load_state(sd, vae_cfg)


def test_full_vae_key_map_matches_official_list():
  cfg = vae_config.VAEConfig()
  expected = nnx_map.expected_shapes(vae_convert.abstract_model(cfg)[1])
  official = {}
  with open(os.path.join(os.path.dirname(PARITY_A), "official_keys_vae.txt")) as f:
    for line in f:
      if line.strip() and not line.startswith("#"):
        key, shape = line.split("\t")[:2]
        official[key] = tuple(int(v) for v in shape.strip().strip("()").split(",") if v.strip())
  assert expected == official
  assert sum(int(np.prod(s)) for s in expected.values()) == 250_648_227


def test_conv_frame_groups_equal_one_conv(vae, monkeypatch):
  """Large convs run in groups of output frames (fold and 3-D paths); the result is unchanged."""
  from seedvr2_jax.models.vae import layers
  x = _video(9, seed=5)
  z = jnp.asarray(np.random.default_rng(5).normal(size=(1, 3, 4, 6, 16)), jnp.float32)
  ref_m, ref_x = codec.encode(vae, x), codec.decode(vae, z)
  monkeypatch.setattr(layers, "FOLD_MAX_ELEMENTS", 32 * 48 * 8 * 3 * 2)
  monkeypatch.setattr(layers, "CONV_MAX_ELEMENTS", 32 * 48 * 8 * 2)
  assert _rel(codec.encode(vae, x), ref_m) < 1e-5
  assert _rel(codec.decode(vae, z), ref_x) < 1e-5


@pytest.mark.parametrize("kernel,stride,pad", [((3, 3, 3), (1, 1, 1), ((1, 1), (1, 1))),
                                               ((3, 3, 3), (2, 2, 2), ((0, 1), (0, 1))),
                                               ((1, 3, 3), (1, 1, 1), ((1, 1), (1, 1)))])
def test_first_frame_alone_is_the_conv_of_the_frame_repeated(kernel, stride, pad):
  """A lone first frame runs as one 2-D conv with the taps' kernels summed; it must equal the
  general path's conv over the causally padded input (the frame repeated k_t times)."""
  from flax import nnx

  from seedvr2_jax.models.vae import layers
  conv = layers.CausalConv3d(vae_config.VAEConfig(), 8, 16, kernel, stride, pad,
                             rngs=nnx.Rngs(0))
  conv.cache_key = "conv"
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 1, 10, 12, 8)), jnp.float32)
  state = CausalState()
  y = conv(x, state)
  kt, keep = kernel[0], kernel[0] - stride[0]
  padded = layers._Padded(jnp.repeat(x, kt - 1, axis=1), x)
  assert y.shape == (2, 1, 10 // stride[1], 12 // stride[2], 16)
  assert _rel(y, conv._conv(padded)) < 1e-6
  if keep:
    np.testing.assert_array_equal(state.next["conv"], jnp.repeat(x, keep, axis=1))
  else:
    assert "conv" not in state.next
