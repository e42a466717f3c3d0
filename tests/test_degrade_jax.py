"""The device degradation (data/degrade_jax.py) against the numpy stages of
data/degradations.py: each stage on a canvas, the noise draws' statistics, the whole per-pixel
pipeline with the numpy noise fields injected, and one compilation for every draw."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FIXTURES
from seedvr2_jax.data import compression, degrade_jax, degradations, noise, video_io
from seedvr2_jax.data.resize import RESIZE_MODES, resize

BIKES = os.path.join(FIXTURES, "media", "bikes_2s.mp4")


@pytest.fixture(scope="module")
def clip():
  """(3, 48, 64, 3) uint8: a textured crop of real frames."""
  frames = video_io.read_frames(video_io.probe(BIKES))
  return np.ascontiguousarray(np.stack([next(frames) for _ in range(3)])[:, 100:148, 280:344])


def _planar(x_thwc: np.ndarray) -> np.ndarray:
  return x_thwc.transpose(0, 3, 1, 2).astype(np.float32) / 255


def _on_canvas(x_tchw: np.ndarray, canvas_hw, fill: float = 7.0) -> jnp.ndarray:
  """x in the top-left corner of a canvas filled with a value no stage may read."""
  t, c, h, w = x_tchw.shape
  out = np.full((t, c, *canvas_hw), fill, np.float32)
  out[:, :, :h, :w] = x_tchw
  return jnp.asarray(out)


def test_reflect_indices_are_numpys():
  for size in (1, 2, 3, 5, 12):
    for pad in (1, 4, 10):
      ref = np.pad(np.arange(size), pad, mode="reflect")
      got = np.asarray(degrade_jax._reflect(size + 3, pad, size))[:size + 2 * pad]
      np.testing.assert_array_equal(got, ref, err_msg=f"size {size} pad {pad}")


def test_blur_and_resize_equal_the_numpy_stages(clip):
  x = _planar(clip)[:, :, :45, :58]  # a drawn region inside a 48x64 canvas
  rng = np.random.default_rng(0)
  for size in (7, 21):
    kernel = degradations.kernels.random_mixed(rng, size, ("aniso",), (1,), (0.5, 3), (1, 1),
                                               (1, 1))
    ref = degradations._filter(x, kernel)
    got = degrade_jax.blur(_on_canvas(x, (48, 64)), jnp.asarray(degrade_jax._kernel(kernel, 21)),
                           jnp.asarray([45, 58]))
    np.testing.assert_allclose(np.asarray(got)[:, :, :45, :58], ref, atol=2e-6)
  for mode in RESIZE_MODES:
    for out_hw in ((20, 33), (70, 101), (45, 30)):
      pair = degrade_jax._resize_pair((45, 58), out_hw, mode, (48, 64), (80, 112))
      got = degrade_jax.resize(_on_canvas(x, (48, 64)), jax.tree.map(jnp.asarray, pair))
      np.testing.assert_allclose(np.asarray(got)[:, :, :out_hw[0], :out_hw[1]],
                                 resize(x, out_hw, mode), atol=2e-6, err_msg=mode)
      assert not np.asarray(got)[:, :, out_hw[0]:].any()  # nothing but the region


def test_jpeg_equals_the_numpy_codec(clip):
  x = _planar(clip)[:, :, :37, :50]  # not whole macroblocks: edge padding and chroma borders
  quality_t = np.array([95, 50, 12])
  ref = compression.jpeg(x, quality_t)
  plan = jax.tree.map(jnp.asarray, degrade_jax._jpeg_plan(quality_t))
  got = np.asarray(degrade_jax.jpeg(_on_canvas(x, (48, 64)), plan, jnp.asarray([37, 50])))
  diff = np.abs(np.rint(got[:, :, :37, :50] * 255) - np.rint(ref * 255))
  # Only where a coefficient sits at a tie of the rounding (DC = k + 1/2 with the tables of
  # 1s and 2s at quality 95) may float32 summation order tip it: a level, in a few blocks.
  assert diff.max() <= 1 and (diff[1:] == 0).all(), (diff.max(), (diff > 0).mean(axis=(1, 2, 3)))
  assert (diff[0] > 0).mean() < 0.04


@pytest.mark.parametrize("gray", [False, True])
def test_noise_draws_match_numpys_statistics(clip, gray):
  x = _planar(clip)  # (3, 3, 48, 64)
  rngs = np.random.default_rng(1).spawn(3)
  key, hw = jax.random.key(3), jnp.asarray([48, 64])
  for kind, strength_t in (("gaussian", np.array([5.0, 20.0, 2.0])),
                           ("poisson", np.array([0.5, 2.0, 0.2]))):
    plan = {"gray": jnp.bool_(gray), "strength_t": jnp.asarray(strength_t, jnp.float32)}
    ref = getattr(noise, kind)(x, strength_t, gray, rngs)
    got = np.asarray(degrade_jax.gaussian_noise(key, x, plan) if kind == "gaussian"
                     else degrade_jax.poisson_noise(key, x, plan, hw))
    assert got.shape == x.shape
    if gray:
      np.testing.assert_array_equal(got[:, 1:], np.broadcast_to(got[:, :1], got[:, 1:].shape))
    ref = np.broadcast_to(ref, got.shape)
    for t in range(3):
      np.testing.assert_allclose(got[t].mean(), ref[t].mean(), atol=0.2 * ref[t].std())
      np.testing.assert_allclose(got[t].std(), ref[t].std(), rtol=0.06)
    assert np.abs(got - ref).mean() > 0.5 * ref.std()  # independent draws, not the same field


def _numpy_degrade_with_fields(hq, params, rngs):
  """degrade_frames, and the noise field each stage added."""
  fields, draw = [], {"gaussian": noise.gaussian, "poisson": noise.poisson}

  def recorded(name):
    def fn(*args):
      fields.append(draw[name](*args))
      return fields[-1]
    return fn

  with pytest.MonkeyPatch.context() as mp:
    for name in draw:
      mp.setattr(noise, name, recorded(name))
    lq = degradations.degrade_frames(hq, params, rngs)
  return lq, fields


@jax.jit
def _device_with_fields(hq_tchw, plan, field1, field2):
  return degrade_jax.degrade_planar(hq_tchw, plan, (12, 16), lambda s, x, hw: (field1, field2)[s - 1])


@pytest.mark.parametrize("preset", ["realesrgan", "heavy"])
def test_pipeline_equals_degrade_frames(clip, preset):
  cfg = degradations.override(degradations.preset(preset), {"jitter": 0.3})
  canvas = degrade_jax.canvas(cfg, (48, 64))
  differing = []
  for seed in range(4):
    rng = np.random.default_rng(seed)
    params = degradations.sample_params(cfg, rng, (48, 64), frames=3)
    ref, fields = _numpy_degrade_with_fields(clip, params, rng.spawn(3))
    plan = degrade_jax.make_plan(params, cfg, (48, 64), np.zeros(2, np.uint32))
    padded = [_on_canvas(np.broadcast_to(f, (3, 3, *f.shape[2:])), hw, 0.0)
              for f, hw in zip(fields, (canvas.stage1, canvas.stage2))]
    out = np.asarray(_device_with_fields(jnp.asarray(_planar(clip)), plan, *padded))
    got = np.clip(np.rint(out[:, :, :12, :16] * 255), 0, 255).transpose(0, 2, 3, 1)
    diff = np.abs(got - ref)
    assert diff.max() <= 1, (seed, params.summary())
    differing.append((diff > 0).mean())
  assert np.mean(differing) < 2e-3, differing


def test_one_compilation_serves_every_draw(clip):
  cfg = degradations.preset("realesrgan")
  hq = np.stack([clip, clip[::-1]])
  jax.clear_caches()
  outs = []
  for seeds in ((0, 1), (2, 3), (0, 1)):
    plans = []
    for seed in seeds:
      rng = np.random.default_rng(seed)
      params = degradations.sample_params(cfg, rng, (48, 64), frames=3)
      plans.append(degrade_jax.make_plan(params, cfg, (48, 64), rng.integers(0, 2 ** 32, 2)))
    outs.append(np.asarray(degrade_jax.degrade_clips(
        hq, jax.tree.map(lambda *a: np.stack(a), *plans), (12, 16))))
  assert degrade_jax.degrade_clips._cache_size() == 1
  assert outs[0].shape == (2, 3, 12, 16, 3) and outs[0].dtype == np.uint8
  assert np.abs(outs[0].astype(int) - outs[1]).mean() > 2  # other draws, other clips
  np.testing.assert_array_equal(outs[2], outs[0])  # the same draws (noise keys included)
