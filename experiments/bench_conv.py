"""Causal 3x3x3 conv formulations on the VAE's main shapes (bf16, forward): which is fastest.

  python experiments/bench_conv.py

conv3d: one lax.conv_general_dilated over (B, T+2, H, W, C), kernel DHWIO.
fold:   the 3 temporal taps concatenated on channels, then one 2-D conv (B*T, H, W, 3C).
taps:   three 2-D convs over shifted frame windows, summed in float32.
"""

import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from seedvr2_jax.utils.benchmark import time_jitted  # noqa: E402

SHAPES = [  # (frames out, H, W, Cin, Cout)
    (4, 720, 1280, 128, 128), (4, 720, 1280, 256, 128), (4, 720, 1280, 256, 256),
    (4, 360, 640, 256, 256), (4, 360, 640, 512, 512), (4, 180, 320, 512, 512),
    (2, 90, 160, 512, 512),
]


def conv3d(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1, 1), ((0, 0), (1, 1), (1, 1)),
                                      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


def fold(x, w):
  t = x.shape[1] - 2
  stacked = jnp.concatenate([x[:, i:i + t] for i in range(3)], axis=-1)
  stacked = stacked.reshape(-1, *stacked.shape[2:])
  w2 = w.transpose(1, 2, 0, 3, 4).reshape(3, 3, -1, w.shape[-1])
  y = jax.lax.conv_general_dilated(stacked, w2, (1, 1), ((1, 1), (1, 1)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y.reshape(x.shape[0], t, *y.shape[1:])


def taps(x, w):
  t = x.shape[1] - 2
  out = 0
  for i in range(3):
    xi = x[:, i:i + t].reshape(-1, *x.shape[2:])
    out = out + jax.lax.conv_general_dilated(
        xi, w[i], (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
        preferred_element_type=jnp.float32)
  return out.astype(x.dtype).reshape(x.shape[0], t, *out.shape[1:])


def main():
  print(jax.devices()[0].device_kind)
  for t, h, w, cin, cout in SHAPES:
    key = jax.random.key(0)
    x = jax.random.normal(key, (1, t + 2, h, w, cin), jnp.bfloat16)
    k = jax.random.normal(key, (3, 3, 3, cin, cout), jnp.bfloat16) * 0.02
    flops = 2 * 27 * cin * cout * t * h * w
    ref = conv3d(x, k).astype(jnp.float32)
    row = []
    for name, fn in (("conv3d", conv3d), ("fold", fold), ("taps", taps)):
      seconds = time_jitted(fn, x, k, iters=5)["seconds"]
      err = float(jnp.linalg.norm(fn(x, k).astype(jnp.float32) - ref) / jnp.linalg.norm(ref))
      row.append(f"{name} {seconds * 1e3:7.2f} ms {flops / seconds / 1e12:5.0f} TF/s err {err:.1e}")
    print(f"T{t} {h}x{w} {cin}->{cout}: " + " | ".join(row), flush=True)


if __name__ == "__main__":
  main()
