"""Attention work of the two window layouts of a NaDiT layer (numpy only, no device):

  padded (cuDNN / XLA): every window padded to the largest, n x S^2 logits;
  packed (splash): windows as block-aligned segments of one sequence, the kernel computing only
  the (q block, kv block) tiles inside a segment.

Prints, per token grid and window method, the useful share of the computed logits
(sum over windows of (video tokens + text)^2 over what the layout computes).

  python experiments/window_packing_stats.py                 # 720p / 1080p, 21 and 45 frames
  python experiments/window_packing_stats.py --block 256 512
"""

import argparse
import os
import sys


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--grids", nargs="+", default=["6x45x80", "12x45x80", "6x67x120", "1x45x80"],
                      help="token grids TxHxW (720p x 21 frames = 6x45x80)")
  parser.add_argument("--txt-len", type=int, default=58)
  parser.add_argument("--block", type=int, nargs="+", default=[128, 256, 512])
  args = parser.parse_args()

  import numpy as np

  from seedvr2_jax.models.dit import window_attention, window_packing
  from seedvr2_jax.models.dit import window_plan as wp

  print(f"{'grid':>10} {'method':>8} {'windows':>7} {'window tokens':>13} {'padded':>7} "
        + " ".join(f"{f'packed/{b}':>11}" for b in args.block))
  for grid in [tuple(int(v) for v in g.split("x")) for g in args.grids]:
    for method in wp.WINDOW_METHODS:
      plan = wp.window_plan(grid, (4, 3, 3), method)
      useful = float(np.sum((plan.lengths.astype(np.int64) + args.txt_len) ** 2))
      seq = window_attention.attention_layout(grid, (4, 3, 3), method, args.txt_len).seq_len
      shares = []
      for block in args.block:
        layout = window_packing.packed_layout(grid, (4, 3, 3), method, args.txt_len, block)
        tiles = np.sum(np.bincount(layout.block_segments).astype(np.int64) ** 2)
        shares.append(useful / (tiles * block * block))
      name = "regular" if method == wp.REGULAR else "shifted"
      print(f"{'x'.join(map(str, grid)):>10} {name:>8} {plan.num_windows:>7} "
            f"{f'{plan.lengths.min()}-{plan.lengths.max()}':>13} "
            f"{useful / (plan.num_windows * seq * seq):7.1%} "
            + " ".join(f"{s:11.1%}" for s in shares))


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main()
