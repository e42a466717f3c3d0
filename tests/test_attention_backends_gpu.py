"""cuDNN flash attention equals the XLA backend (GPU only: run with `pytest -m gpu`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seedvr2_jax.models.dit import window_attention as wattn
from seedvr2_jax.models.dit import window_plan as wp
from seedvr2_jax.ops import attention as attention_lib

pytestmark = pytest.mark.gpu


def _rel(a, b):
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_cudnn_matches_xla_on_padded_sequences():
  assert jax.default_backend() == "gpu"
  keys = jax.random.split(jax.random.key(0), 3)
  q, k, v = (jax.random.normal(kk, (6, 320, 4, 128), jnp.bfloat16) for kk in keys)
  lengths = jnp.array([320, 257, 64, 1, 190, 300], jnp.int32)
  run = lambda backend: jax.jit(lambda *a: attention_lib.attention(*a, backend=backend))(
      q, k, v, lengths)
  out_cudnn, out_xla = run("cudnn"), run("xla")
  for b, n in enumerate(np.asarray(lengths)):
    assert _rel(out_cudnn[b, :n], out_xla[b, :n]) < 1e-2


@pytest.mark.parametrize("method", wp.WINDOW_METHODS)
def test_cudnn_window_attention_matches_xla_at_720p(method):
  grid, txt = (6, 45, 80), 58
  n = int(np.prod(grid))
  keys = jax.random.split(jax.random.key(1), 6)
  vid = [jax.random.normal(kk, (1, n, 20, 128), jnp.bfloat16) for kk in keys[:3]]
  txts = [jax.random.normal(kk, (1, txt, 20, 128), jnp.bfloat16) for kk in keys[3:]]
  layout = wattn.attention_layout(grid, (4, 3, 3), method, txt)
  run = lambda backend: jax.jit(lambda *a: wattn.window_attention(
      *a, layout=layout, backend=backend))(*vid, *txts, jnp.array([txt], jnp.int32))
  (v_cudnn, t_cudnn), (v_xla, t_xla) = run("cudnn"), run("xla")
  assert _rel(v_cudnn, v_xla) < 1e-2 and _rel(t_cudnn, t_xla) < 1e-2
