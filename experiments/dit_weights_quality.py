"""Quality cost of weight-only int8 / fp8 DiT block kernels (docs/memory.md, "Quantised DiT weights").

  python experiments/dit_weights_quality.py error --layers 4            # random 3B-width weights
  python experiments/dit_weights_quality.py restore LQ.mp4 REFERENCE.mp4 --scale 2

`error`: a 3B of the official widths cut to `--layers` blocks (half of them with separate
video/text weights), random weights, one forward on a small token grid: max |out - native| of
int8, fp8 and of bfloat16 compute (for scale), float32 compute. `restore`: the bundled toy model
(or `--checkpoint`) restores LQ with native, int8 and fp8 block kernels (frames as arrays, no
video encode); PSNR and LPIPS of each against REFERENCE and against the native output.
"""

import argparse
import os
import sys
import time


def error(args):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from seedvr2_jax.models.dit import config as dit_config
  from seedvr2_jax.models.dit import quantize
  from seedvr2_jax.models.dit.nadit import NaDiT

  cfg = dit_config.official("3b", num_layers=args.layers, mm_layers=args.layers // 2)
  native = NaDiT(cfg, nnx.Rngs(0))
  keys = jax.random.split(jax.random.key(1), 2)
  vid = jax.random.normal(keys[0], (1, *args.latent, cfg.vid_in_channels))
  txt = jax.random.normal(keys[1], (1, args.txt_len, cfg.txt_in_dim))
  timestep = jnp.full((1,), 1000.0, jnp.float32)

  def run(model):
    graphdef, state = nnx.split(model)
    return np.asarray(jax.jit(lambda s: nnx.merge(graphdef, s)(vid, txt, timestep))(state))

  base = run(native)
  graphdef, state = nnx.split(native)
  bf16_cfg = dit_config.official("3b", num_layers=args.layers, mm_layers=args.layers // 2,
                                 dtype="bfloat16")
  bf16 = nnx.merge(nnx.split(nnx.eval_shape(lambda: NaDiT(bf16_cfg, nnx.Rngs(0))))[0], state)
  scale = np.abs(base).max()
  print(f"3B widths, {args.layers} blocks, latent {args.latent}, text {args.txt_len}: "
        f"max |native| = {scale:.4f}")
  for name, model in (("int8", quantize.quantize_model(native, "int8")),
                      ("fp8", quantize.quantize_model(native, "fp8")), ("bf16 compute", bf16)):
    diff = np.abs(run(model) - base)
    print(f"{name:13} max |diff| {diff.max():.5f} ({diff.max() / scale:.2%} of max), "
          f"rms {np.sqrt(np.mean(diff ** 2)):.5f}")


def restore(args):
  import jax.numpy as jnp
  import numpy as np

  from seedvr2_jax import Restorer
  from seedvr2_jax.data import video_io
  from seedvr2_jax.infer import restore as restore_lib
  from seedvr2_jax.metrics import fidelity
  from seedvr2_jax.metrics import lpips as lpips_lib

  read = lambda path: np.stack(list(video_io.read_frames(video_io.probe(path))))
  lq, reference = read(args.lq), read(args.reference)
  models = restore_lib.load_models(args.checkpoint, "float32", print)
  outs = {}
  for fmt in ("native", "int8", "fp8"):
    start = time.perf_counter()
    restorer = Restorer.load(models=models, dit_weights=fmt, scale=args.scale,
                             clip_frames=args.clip_frames, log=lambda line: None)
    outs[fmt] = restorer.restore_array(lq)
    print(f"{fmt}: {time.perf_counter() - start:.0f} s")
  as_unit = lambda frames: jnp.asarray(frames, jnp.float32) / 255
  psnr = lambda a, b: float(jnp.mean(fidelity.psnr(as_unit(a), as_unit(b))))
  lpips_fn = lpips_lib.make_lpips()
  lpips = lambda a, b: float(jnp.mean(lpips_fn(as_unit(a), as_unit(b))))
  for fmt, out in outs.items():
    ref = reference[:len(out)]
    row = f"{fmt:7} vs reference {psnr(out, ref):.2f} dB, LPIPS {lpips(out, ref):.4f}"
    if fmt != "native":
      row += (f"; vs native {psnr(out, outs['native']):.2f} dB, LPIPS "
              f"{lpips(out, outs['native']):.4f}, max |diff| "
              f"{np.abs(out.astype(int) - outs['native']).max()} levels")
    print(row)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("error")
  p.add_argument("--layers", type=int, default=4)
  p.add_argument("--latent", type=int, nargs=3, default=(2, 16, 16))
  p.add_argument("--txt-len", type=int, default=16)
  p.set_defaults(run=error)
  p = sub.add_parser("restore")
  p.add_argument("lq")
  p.add_argument("reference")
  p.add_argument("--checkpoint", default=None)
  p.add_argument("--scale", type=float, default=2.0)
  p.add_argument("--clip-frames", type=int, default=21)
  p.set_defaults(run=restore)
  args = parser.parse_args()
  args.run(args)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main()
