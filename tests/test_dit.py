"""NaDiT behaviour beyond the parity command: intermediates, batching, text padding, bf16."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import PARITY_A
from seedvr2_jax.convert import dit as dit_convert
from seedvr2_jax.convert.state_dict import open_state_dict
from seedvr2_jax.errors import ConfigError
from seedvr2_jax.models.dit import config as dit_config
from seedvr2_jax.models.dit.nadit import patchify, unpatchify
from seedvr2_jax.parity.dit import unpack


def _load(parity_config, component, **numerics):
  variant = component[-2:]
  cfg = dit_config.from_official(parity_config[component]["config"], variant, **numerics)
  sd = open_state_dict(os.path.join(PARITY_A, f"{component}.safetensors"))
  return cfg, dit_convert.load_model(sd, cfg)


def _forward(model):
  graphdef, state = nnx.split(model)
  fn = jax.jit(lambda s, *a: nnx.merge(graphdef, s)(*a))
  return lambda *a: np.asarray(fn(state, *a))


def _rel(a, b):
  return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.fixture(scope="module")
def dit3b(parity_config):
  return _load(parity_config, "dit3b")


def test_3b_embedding_intermediates(dit3b, dit_io):
  _, model = dit3b
  with np.load(os.path.join(PARITY_A, "dit3b_intermediates.npz")) as ref:
    emb = model.emb_in(jnp.asarray(dit_io["timestep"]))
    assert _rel(emb, ref["emb_in_out"]) < 1e-5
    assert _rel(model.txt_in(jnp.asarray(dit_io["txt"])), ref["txt_in_out"]) < 1e-5


def test_batch_gives_each_sample_its_own_result(dit3b, dit_io):
  _, model = dit3b
  forward = _forward(model)
  vid = unpack(dit_io["vid"], dit_io["vid_shape"])[0]
  txt = unpack(dit_io["txt"], dit_io["txt_shape"])[0]
  rng = np.random.default_rng(0)
  vid_b = np.stack([vid, vid + rng.normal(size=vid.shape).astype(np.float32)])
  txt_b = np.stack([txt, 0.5 * txt[::-1]])
  t_b = np.array([1000.0, 400.0], np.float32)
  batched = forward(vid_b, txt_b, t_b)
  for i in range(2):
    single = forward(vid_b[i:i + 1], txt_b[i:i + 1], t_b[i:i + 1])
    assert _rel(batched[i], single[0]) < 1e-5
  n = int(np.prod(dit_io["vid_shape"][0]))
  assert _rel(batched[0].reshape(n, -1), dit_io["out"][:n]) < 1e-4
  # The second sample differs from the first (the official 3B batching quirk is not kept).
  assert _rel(batched[1], batched[0]) > 1e-2


@pytest.mark.parametrize("component", ["dit3b", "dit7b"])
def test_padded_text_equals_unpadded(parity_config, dit_io, component):
  _, model = _load(parity_config, component)
  forward = _forward(model)
  vid = unpack(dit_io["vid"], dit_io["vid_shape"])[1]
  txt = unpack(dit_io["txt"], dit_io["txt_shape"])[1]
  t = np.array([700.0], np.float32)
  padded = np.concatenate([txt, np.full((3, txt.shape[1]), 50.0, np.float32)])
  out_padded = forward(vid[None], padded[None], t, np.array([len(txt)], np.int32))
  assert _rel(out_padded, forward(vid[None], txt[None], t)) < 1e-5


@pytest.mark.parametrize("component", ["dit3b", "dit7b"])
def test_bf16_compute_tracks_float32(parity_config, dit_io, component):
  cfg, model = _load(parity_config, component)
  _, model_bf16 = _load(parity_config, component, dtype="bfloat16", param_dtype="bfloat16")
  vid = unpack(dit_io["vid"], dit_io["vid_shape"])[0][None]
  txt = unpack(dit_io["txt"], dit_io["txt_shape"])[0][None]
  t = np.array([1000.0], np.float32)
  out32, out16 = _forward(model)(vid, txt, t), _forward(model_bf16)(vid, txt, t)
  assert out16.dtype == np.float32
  assert _rel(out16, out32) < 3e-2


@pytest.mark.parametrize("patch", [(1, 2, 2), (2, 2, 2), (4, 1, 2)])
def test_patchify_roundtrip(patch):
  x = jax.random.normal(jax.random.key(0), (2, 5, 4, 6, 3))
  tokens = patchify(x, patch)
  assert tokens.shape[-1] == 3 * np.prod(patch)
  np.testing.assert_array_equal(unpatchify(tokens, patch, 5), x)
  # Feature order is (t, h, w, c) with c fastest, as the official rearrange.
  if patch == (1, 2, 2):
    np.testing.assert_array_equal(tokens[0, 0, 0, 0, 3:6], x[0, 0, 0, 1])


def test_config_rejects_unknown_and_unsupported_keys(parity_config):
  official = dict(parity_config["dit3b"]["config"])
  with pytest.raises(ConfigError, match="unknown official 3b DiT config key"):
    dit_config.from_official({**official, "bogus": 1}, "3b")
  with pytest.raises(ConfigError, match="mlp_type"):
    dit_config.from_official({**official, "mlp_type": "moe"}, "3b")
  with pytest.raises(ConfigError, match="unknown DiT config key"):
    dit_config.from_config_dict({"variant": "3b", "depth": 3})
