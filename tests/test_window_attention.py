"""Batched, padded window attention equals per-window dense attention built from the same plan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seedvr2_jax.models.dit import window_attention as wattn
from seedvr2_jax.models.dit import window_plan as wp


def dense_reference(q, k, v, qt, kt, vt, txt_len, windows, grid):
  """Per window, dense softmax attention over [its video tokens, the valid text] in float64;
  text outputs averaged over windows (numpy, one sample)."""
  q, k, v, qt, kt, vt = (np.asarray(x, np.float64) for x in (q, k, v, qt, kt, vt))
  ids = np.arange(int(np.prod(grid))).reshape(grid)
  out_vid = np.zeros_like(q)
  out_txt = np.zeros_like(qt[:txt_len])
  for t0, t1, h0, h1, w0, w1 in windows:
    sel = ids[t0:t1, h0:h1, w0:w1].reshape(-1)
    qs = np.concatenate([q[sel], qt[:txt_len]])
    ks = np.concatenate([k[sel], kt[:txt_len]])
    vs = np.concatenate([v[sel], vt[:txt_len]])
    logits = np.einsum("shd,thd->hst", qs, ks) / np.sqrt(q.shape[-1])
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = np.einsum("hst,thd->shd", p, vs)
    out_vid[sel] = o[:len(sel)]
    out_txt += o[len(sel):] / len(windows)
  return out_vid, out_txt


@pytest.mark.parametrize("grid", [(2, 20, 26), (5, 6, 10), (7, 9, 31), (1, 24, 16)])
@pytest.mark.parametrize("method", wp.WINDOW_METHODS)
def test_window_attention_matches_dense(grid, method):
  heads, head_dim, max_txt = 2, 8, 6
  txt_len = np.array([6, 3], np.int32)  # the second sample's text is right-padded
  keys = jax.random.split(jax.random.key(hash((grid, method)) % 2**31), 6)
  n = int(np.prod(grid))
  vid = [jax.random.normal(kk, (2, n, heads, head_dim)) for kk in keys[:3]]
  txt = [jax.random.normal(kk, (2, max_txt, heads, head_dim)) for kk in keys[3:]]
  # Garbage in the padded text rows must not reach any valid output.
  txt = [t.at[1, 3:].set(1e4) for t in txt]
  layout = wattn.attention_layout(grid, (4, 3, 3), method, max_txt)
  out_vid, out_txt = jax.jit(lambda *a: wattn.window_attention(
      *a, layout=layout, backend="xla"))(*vid, *txt, jnp.asarray(txt_len))
  windows = wp.make_windows(grid, (4, 3, 3), method)
  for b in range(2):
    ref_vid, ref_txt = dense_reference(*(x[b] for x in vid), *(x[b] for x in txt),
                                       int(txt_len[b]), windows, grid)
    np.testing.assert_allclose(out_vid[b], ref_vid, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(out_txt[b, :txt_len[b]], ref_txt, atol=2e-5, rtol=1e-5)


def test_layout_pads_sequences_to_the_tile_multiple():
  layout = wattn.attention_layout((2, 20, 26), (4, 3, 3), wp.REGULAR, 7)
  assert layout.seq_len % wattn.SEQ_MULTIPLE == 0
  assert layout.seq_len >= layout.vid_len.max() + 7
