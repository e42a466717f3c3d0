"""`seedvr2-jax <command>`: the one console entry point."""

from __future__ import annotations

import argparse
import sys

from seedvr2_jax.errors import SeedVR2Error


def _parity(args) -> int:
  from seedvr2_jax import parity
  components = args.components.split(",") if args.components else None
  return 0 if parity.run(args.fixture, components) else 1


def _params(args) -> int:
  import jax
  import numpy as np

  from seedvr2_jax import config_lib
  from seedvr2_jax.convert import dit as dit_convert
  from seedvr2_jax.models.dit import config as dit_config
  cfg = dit_config.from_config_dict(config_lib.load_config(args.config).model)
  _, abstract = dit_convert.abstract_model(cfg)  # jax.eval_shape: nothing is allocated
  total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
  rope = len(dit_convert.rope_buffer_keys(cfg)) * (0 if cfg.rope_type is None
                                                    else len(cfg.rope_freqs))
  print(f"total_params={total}")
  print(f"rope_buffer_elements={rope} (official state_dict entries: {total + rope})")
  return 0


def _size(text: str) -> tuple[int, int]:
  """'HxW' -> (H, W)."""
  try:
    h, w = (int(v) for v in text.lower().split("x"))
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected HxW (e.g. 720x1280), got {text!r}") from None
  if h <= 0 or w <= 0:
    raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
  return h, w


def _restore(args) -> int:
  import os

  import jax

  from seedvr2_jax.infer import restore
  jax.config.update("jax_compilation_cache_dir", os.environ.get(
      "JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/seedvr2-jax/xla")))
  fields = {f: getattr(args, f) for f in restore.Request.__dataclass_fields__}
  restore.run(restore.Request(**fields))
  return 0


def _convert(args) -> int:
  from seedvr2_jax import config_lib
  from seedvr2_jax.convert import bundle
  from seedvr2_jax.models.dit import config as dit_config
  from seedvr2_jax.models.vae import config as vae_config
  dit_cfg = vae_cfg = None
  if args.dit_config:
    dit_cfg = dit_config.from_config_dict(config_lib.load_config(args.dit_config).model)
  if args.vae_config:
    vae_cfg = vae_config.from_config_dict(config_lib.load_config(args.vae_config).vae)
  bundle.convert(args.dit, args.vae, args.pos_emb, args.neg_emb, args.out,
                 dtype={"bf16": "bfloat16", "fp32": "float32"}[args.dtype], variant=args.variant,
                 dit_cfg=dit_cfg, vae_cfg=vae_cfg, overwrite=args.overwrite)
  return 0


def _export(args) -> int:
  from seedvr2_jax.convert import bundle
  bundle.export(args.checkpoint, args.out, overwrite=args.overwrite)
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="seedvr2-jax", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("parity", help="compare the port with official outputs in a fixture dir")
  p.add_argument("fixture", help="fixture directory (e.g. tests/fixtures/parity_a)")
  p.add_argument("--components", help="comma-separated subset, e.g. dit3b,dit7b (default: all)")
  p.set_defaults(run=_parity)
  p = sub.add_parser("params", help="count a config's parameters without allocating them")
  p.add_argument("config", help="config file, e.g. configs/seedvr2_3b.py[:tiny]")
  p.set_defaults(run=_params)

  p = sub.add_parser("convert", help="official SeedVR2 files -> one JAX checkpoint directory")
  p.add_argument("--dit", required=True, help="seedvr2_ema_{3b,7b}[_sharp].pth or .safetensors")
  p.add_argument("--vae", required=True, help="ema_vae.pth or .safetensors")
  p.add_argument("--pos-emb", required=True, help="pos_emb.pt (or .safetensors)")
  p.add_argument("--neg-emb", required=True, help="neg_emb.pt (or .safetensors)")
  p.add_argument("--out", required=True, help="checkpoint directory to create")
  p.add_argument("--dtype", choices=["bf16", "fp32"], default="fp32")
  p.add_argument("--variant", choices=["3b", "7b"], help="default: detected from the keys")
  p.add_argument("--dit-config", help="config file for a non-official DiT size")
  p.add_argument("--vae-config", help="config file for a non-official VAE size")
  p.add_argument("--overwrite", action="store_true")
  p.set_defaults(run=_convert)

  p = sub.add_parser("export", help="a JAX checkpoint -> official-key safetensors files")
  p.add_argument("checkpoint", help="directory made by `convert` (or by training)")
  p.add_argument("--out", required=True, help="directory to write the .safetensors files into")
  p.add_argument("--overwrite", action="store_true")
  p.set_defaults(run=_export)

  p = sub.add_parser("restore", help="restore a video, image or frame folder in one step")
  p.add_argument("input", help="video file, image, or folder of PNG/JPG frames")
  p.add_argument("output", help=".mp4/.mkv/.mov, an image file, or a folder for PNG frames")
  p.add_argument("--checkpoint", help="directory made by `seedvr2-jax convert`")
  size = p.add_mutually_exclusive_group()
  size.add_argument("--resolution", type=_size,
                    help="HxW: output area H*W, input aspect kept (official; default 720x1280)")
  size.add_argument("--short-side", type=int, help="output short side in pixels")
  size.add_argument("--scale", type=float, help="output size = input size x S")
  p.add_argument("--colorfix", choices=["wavelet", "adain", "none"], default="wavelet")
  p.add_argument("--seed", type=int, default=666)
  p.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto",
                 help="auto: bfloat16 on GPU, float32 elsewhere")
  p.add_argument("--clip-frames", type=int,
                 help="frames per clip for long videos (default: the whole video, as official)")
  p.add_argument("--clip-overlap", type=int, default=8, help="frames cross-faded between clips")
  p.add_argument("--max-frames", type=int, help="restore only the first N frames")
  p.add_argument("--encode-chunk", type=int, default=4, help="VAE encode chunk (frames, 4k)")
  p.add_argument("--decode-chunk", type=int, default=1, help="VAE decode chunk (latent frames)")
  p.add_argument("--tile", type=_size, help="HxW VAE spatial tile in pixels (very large frames)")
  p.add_argument("--tile-overlap", type=int, default=64, help="tile overlap in pixels")
  p.add_argument("--sequence-parallel", type=int, default=1,
                 help="devices that share one clip (the rest run clips in parallel)")
  p.add_argument("--crf", type=int, default=18, help="H.264 quality (lower is better)")
  p.add_argument("--overwrite", action="store_true", help="replace an existing output")
  p.add_argument("--dry-run", action="store_true", help="print the plan, restore nothing")
  p.set_defaults(run=_restore)
  return parser


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return args.run(args)
  except SeedVR2Error as e:
    print(f"seedvr2-jax {args.command}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
