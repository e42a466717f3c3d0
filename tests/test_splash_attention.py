"""The splash backend (Pallas TPU kernel, interpret mode on CPU) equals the XLA backend: padded
sequences, packed window segments on real plans, gradients and the whole NaDiT forward.

Tolerances (float32): max |splash - xla| <= 1e-5 on O(1) outputs; only the order of the
softmax sums differs (the kernel's online softmax over 128-token blocks).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from seedvr2_jax.models.dit import config as dit_config
from seedvr2_jax.models.dit import window_attention as wattn
from seedvr2_jax.models.dit import window_packing
from seedvr2_jax.models.dit import window_plan as wp
from seedvr2_jax.models.dit.nadit import NaDiT
from seedvr2_jax.ops import attention as attention_lib
from seedvr2_jax.ops import splash

# 720p's token grid (t, 45, 80) scaled down 2.5x: the same 16:9 windows, uneven at the borders.
GRID = (2, 18, 32)
TOL = 1e-5


def _normal(key, *shapes):
  return [jax.random.normal(k, s) for k, s in zip(jax.random.split(key, len(shapes)), shapes)]


def test_splash_equals_xla_on_padded_sequences_with_gradients():
  q, k, v = _normal(jax.random.key(0), *[(3, 200, 2, 32)] * 3)  # 200: not a block multiple
  lengths = jnp.array([200, 131, 7], jnp.int32)

  def loss(backend, q, k, v):
    out = attention_lib.attention(q, k, v, lengths, backend=backend)
    valid = jnp.arange(200)[None, :, None, None] < lengths[:, None, None, None]
    return jnp.sum(jnp.where(valid, out, 0.0) ** 2), out

  grad = lambda backend: jax.jit(jax.grad(lambda *a: loss(backend, *a), argnums=(0, 1, 2),
                                          has_aux=True))(q, k, v)
  (grads_s, out_s), (grads_x, out_x) = grad("splash"), grad("xla")
  for b, n in enumerate(np.asarray(lengths)):
    np.testing.assert_allclose(out_s[b, :n], out_x[b, :n], atol=TOL, rtol=0)
  for g_s, g_x in zip(grads_s, grads_x):
    np.testing.assert_allclose(g_s, g_x, atol=TOL * float(jnp.abs(g_x).max()), rtol=0)


def test_packed_layout_aligns_each_window_to_blocks():
  layout = window_packing.packed_layout(GRID, (4, 3, 3), wp.SHIFTED, 5, splash.BLOCK)
  plan = wp.window_plan(GRID, (4, 3, 3), wp.SHIFTED)
  spans = -(-(plan.lengths + 5) // splash.BLOCK) * splash.BLOCK
  assert layout.gather_idx.size == spans.sum() == len(layout.block_segments) * splash.BLOCK
  # Every video token once, in its window's segment; every window has the text once.
  assert sorted(layout.gather_idx[layout.vid_slot]) == list(range(int(np.prod(GRID))))
  window, _ = np.divmod(plan.scatter_idx, plan.max_len)
  np.testing.assert_array_equal(layout.segment[layout.vid_slot], window)
  np.testing.assert_array_equal(layout.txt_pos[layout.txt_slot], np.tile(np.arange(5),
                                                                         (plan.num_windows, 1)))
  blocks = np.asarray(layout.block_segments)
  np.testing.assert_array_equal(np.repeat(blocks, splash.BLOCK)[layout.segment < len(spans)],
                                layout.segment[layout.segment < len(spans)])
  # The kernel's static mask: block-diagonal over windows, the same read whole or by blocks.
  mask = splash.BlockDiagonalMask(layout.block_segments, splash.BLOCK)
  whole = mask[slice(None), slice(None)]
  slot_window = np.repeat(blocks, splash.BLOCK)
  np.testing.assert_array_equal(whole, slot_window[:, None] == slot_window[None, :])
  b = splash.BLOCK
  for i, j in [(0, 0), (0, 1), (2, 3), (3, 3)]:
    np.testing.assert_array_equal(mask[slice(i * b, (i + 1) * b), slice(j * b, (j + 1) * b)],
                                  whole[i * b:(i + 1) * b, j * b:(j + 1) * b])


@pytest.mark.parametrize("method", wp.WINDOW_METHODS)
def test_packed_window_attention_equals_padded_xla(method):
  heads, head_dim, max_txt = 2, 32, 6
  txt_len = jnp.array([6, 3], jnp.int32)  # the second sample's text is right-padded
  n = int(np.prod(GRID))
  vid = _normal(jax.random.key(1), *[(2, n, heads, head_dim)] * 3)
  txt = [t.at[1, 3:].set(1e4) for t in _normal(jax.random.key(2),
                                                  *[(2, max_txt, heads, head_dim)] * 3)]
  run = lambda layout, backend: jax.jit(lambda *a: wattn.window_attention(
      *a, layout=layout, backend=backend))(*vid, *txt, txt_len)
  packed = window_packing.packed_layout(GRID, (4, 3, 3), method, max_txt, splash.BLOCK)
  vid_s, txt_s = run(packed, "splash")
  vid_x, txt_x = run(wattn.attention_layout(GRID, (4, 3, 3), method, max_txt), "xla")
  np.testing.assert_allclose(vid_s, vid_x, atol=TOL, rtol=0)
  for b in range(2):
    np.testing.assert_allclose(txt_s[b, :txt_len[b]], txt_x[b, :txt_len[b]], atol=TOL, rtol=0)


@pytest.mark.parametrize("variant", ["3b", "7b"])
def test_nadit_forward_splash_equals_xla(variant):
  """Both code paths, a regular and a shifted layer, batch 2 with padded text."""
  layers = dict(num_layers=2, mm_layers=1) if variant == "3b" else {}

  def model(backend):
    cfg = dit_config.official(variant, **{**dit_config.TINY[variant], **layers},
                              attention_backend=backend)
    graphdef, state = nnx.split(NaDiT(cfg, nnx.Rngs(0)))
    return jax.jit(lambda *a: nnx.merge(graphdef, state)(*a))

  latent = (GRID[0], 2 * GRID[1], 2 * GRID[2])
  vid, txt = _normal(jax.random.key(3), (2, *latent, 33), (2, 5, 32))
  args = (vid, txt, jnp.array([1000.0, 300.0]), jnp.array([5, 2], jnp.int32))
  out_s, out_x = model("splash")(*args), model("xla")(*args)
  assert float(jnp.abs(out_x).max()) > 0.1
  np.testing.assert_allclose(out_s, out_x, atol=TOL * float(jnp.abs(out_x).max()), rtol=0)


def test_sharded_splash_runs_in_a_shard_map_and_equals_one_device():
  """4 CPU devices, batch over "data" and heads over "sequence": forward and gradient."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__),
                                                      "sharded_splash_check.py")],
                        env=env, capture_output=True, text=True, check=True)
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert report["arrays"] == 5 and report["max_rel_err"] <= TOL, report
