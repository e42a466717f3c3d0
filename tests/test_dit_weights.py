"""Cheaper DiT weights: weight-only int8 / fp8 block kernels and host-streamed blocks."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import FIXTURES
from seedvr2_jax.errors import ConfigError
from seedvr2_jax.models.dit import config as dit_config
from seedvr2_jax.models.dit import quantize, streaming
from seedvr2_jax.models.dit.nadit import NaDiT

# 8 blocks, 2 separate: scan ranges [0], [1], [2, 6), [6], [7] (the 3B's layout in small).
CFG = dit_config.official("3b", **{**dit_config.TINY["3b"], "num_layers": 8, "mm_layers": 2})


def _inputs():
  keys = jax.random.split(jax.random.key(1), 2)
  return (jax.random.normal(keys[0], (1, 2, 8, 8, 33)), jax.random.normal(keys[1], (1, 5, 32)),
          np.array([500.0], np.float32))


def _run(model) -> np.ndarray:
  graphdef, state = nnx.split(model)
  return np.asarray(jax.jit(lambda s, *a: nnx.merge(graphdef, s)(*a))(state, *_inputs()))


def _kernels(w_io):
  """Channels of very different magnitudes, one all zero."""
  return w_io * np.logspace(-3, 1, w_io.shape[1])[None] * (np.arange(w_io.shape[1]) > 0)


def test_quantize_error_bounds_per_channel():
  w = _kernels(np.random.default_rng(0).normal(size=(96, 40)).astype(np.float32))
  for fmt in ("int8", "fp8"):
    qa = quantize.quantize(w, fmt)
    _, qmax = quantize.FORMATS[fmt]
    q, scale = np.asarray(qa.q, np.float32), np.asarray(qa.scale)
    assert qa.q.dtype == quantize.FORMATS[fmt][0] and scale.shape == (1, 40)
    np.testing.assert_allclose(np.abs(q[:, 1:]).max(0), qmax)  # each channel's range is used
    err = np.abs(w - np.asarray(qa.dequantize(jnp.float32)))
    if fmt == "int8":
      assert np.all(err <= scale / 2 * (1 + 1e-6))
    else:  # half an e4m3 ulp: 2^-4 relative, 2^-10 scale among subnormals
      assert np.all(err <= np.maximum(np.abs(w) * 2.0 ** -4, scale * 2.0 ** -10) * (1 + 1e-6))
    assert err[:, 0].max() == 0 and scale[0, 0] == 1.0  # the zero channel
  with pytest.raises(ConfigError, match="unknown DiT weight format"):
    quantize.quantize(w, "int4")


@pytest.fixture(scope="module")
def dit7b():
  """A scanned tiny 7B (one pair of blocks under lax.scan; Linear biases) and its output."""
  cfg = dit_config.official("7b", **{**dit_config.TINY["7b"], "num_layers": 4},
                            scan_layers=True)
  model = NaDiT(cfg, nnx.Rngs(0))
  return model, _run(model)


@pytest.mark.parametrize("fmt,bound", [("int8", 0.01), ("fp8", 0.05)])
def test_quantized_dit_equals_its_dequantized_weights_and_tracks_native(dit7b, fmt, bound):
  """The quantised model equals a native one holding the dequantised kernels exactly, and
  differs from the float32 model by a small amount (measured: int8 0.4%, fp8
  2.2% of the output's max)."""
  native, base = dit7b
  quantized = quantize.quantize_model(native, fmt)
  graphdef, state = nnx.split(quantized)
  kernels = [x for x in jax.tree.leaves(state, is_leaf=quantize.is_quantized)
             if quantize.is_quantized(x)]
  assert len(kernels) == 4 * 2 * 4  # qkv, out, 2 MLP kernels; vid + txt copies
  assert {k.q.dtype for k in kernels} == {jnp.dtype(quantize.FORMATS[fmt][0])}
  reference = nnx.merge(graphdef, quantize.dequantize(state, jnp.float32))
  out, ref = _run(quantized), _run(reference)
  np.testing.assert_array_equal(out, ref)
  err = np.abs(out - base).max() / np.abs(base).max()
  assert 0 < err < bound, err


def _host_memory_uses(jaxpr) -> set[str]:
  """How the equations of `jaxpr` (nested ones included) use host-memory values. XLA's GPU
  compiler accepts only a dynamic slice and the copy to the device of a host-memory value inside
  a loop: a scan over host-memory operands reshapes each step's slice there (a compile error on
  GPU that the CPU backend, without host memory, cannot show)."""
  uses = set()
  on_host = lambda v: getattr(getattr(v, "aval", None), "memory_space", None) == (
      jax.memory.Space.Host)
  for eqn in jaxpr.eqns:
    for i, v in enumerate(eqn.invars):
      if not on_host(v):
        continue
      if eqn.primitive.name == "scan":  # the body sees a constant whole, an operand sliced
        body_shape = eqn.params["jaxpr"].jaxpr.invars[i].aval.shape
        uses.add("scan constant" if body_shape == v.aval.shape else "scan operand")
      elif eqn.primitive.name == "dynamic_slice" and i == 0:
        uses.add("slice keeping its axes" if eqn.outvars[0].aval.ndim == v.aval.ndim
                 else "slice dropping axes")
      else:
        uses.add(eqn.primitive.name)
    for param in eqn.params.values():
      inner = getattr(param, "jaxpr", param)
      if hasattr(inner, "eqns"):
        uses |= _host_memory_uses(inner)
  return uses


def test_host_streamed_blocks_equal_the_resident_model():
  model = NaDiT(dataclasses.replace(CFG, scan_layers=True), nnx.Rngs(0))
  streamed = streaming.stream_blocks(model)
  assert [(s.start, s.stop) for s in streamed.blocks] == [(0, 1), (1, 2), (2, 6), (6, 7), (7, 8)]
  graphdef, state = nnx.split(streamed)
  kinds = {}
  for path, x in jax.tree_util.tree_flatten_with_path(state)[0]:
    kinds.setdefault(path[0].key == "blocks", set()).add(x.sharding.memory_kind)
  assert kinds == {True: {"pinned_host"}, False: {"device"}}
  jaxpr = jax.make_jaxpr(lambda s: nnx.merge(graphdef, s)(*_inputs()))(state).jaxpr
  assert _host_memory_uses(jaxpr) == {"scan constant", "slice keeping its axes", "device_put"}
  np.testing.assert_array_equal(_run(streamed), _run(model))
  with pytest.raises(ValueError, match="without taps"):
    streamed.hidden_states(*_inputs(), tap_layers=(3,))


def test_host_streamed_int8_blocks_equal_the_resident_int8_model(dit7b):
  quantized = quantize.quantize_model(dit7b[0], "int8")
  streamed = streaming.stream_blocks(quantized)
  kernel = streamed.blocks[0].modules[0].attn.proj_qkv.vid.kernel.get_value()
  assert kernel.q.dtype == jnp.int8 and kernel.q.sharding.memory_kind == "pinned_host"
  np.testing.assert_array_equal(_run(streamed), _run(quantized))


def test_restore_with_int8_dit_weights_runs_end_to_end():
  """The bundled toy model with int8 block kernels: a restoration close to the native one."""
  from seedvr2_jax import Restorer
  from seedvr2_jax.data import video_io
  from seedvr2_jax.infer import restore
  from seedvr2_jax.metrics import fidelity
  info = video_io.probe(os.path.join(FIXTURES, "media", "bikes_2s.mp4"))
  frames = np.stack([f for _, f in zip(range(1), video_io.read_frames(info))])
  lines = []
  models = restore.load_models(None, "float32", lines.append)
  outs = [Restorer.load(log=lines.append, models=models, dit_weights=w,
                        short_side=64).restore_array(frames) for w in ("native", "int8")]
  assert any("held as int8" in line for line in lines)
  assert outs[1].shape == outs[0].shape == (1, 64, 151, 3)
  psnr = float(jnp.mean(fidelity.psnr(*(jnp.asarray(o, jnp.float32) / 255 for o in outs))))
  assert 45 < psnr < 100, psnr  # carphone, 120 frames: 57.9 dB (docs/memory.md)
