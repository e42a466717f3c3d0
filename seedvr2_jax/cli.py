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
