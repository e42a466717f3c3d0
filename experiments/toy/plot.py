"""Training curves of a toy run as PNG plots: one figure per stage from its metrics.jsonl.

  python experiments/toy/plot.py OUT [--to experiments/toy/curves]
"""

from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# stage -> the logged series worth plotting (missing ones are skipped)
SERIES = {
    "vae": ("loss", "l1", "lpips", "psnr"),
    "diffusion": ("loss", "grad_norm"),
    "distill": ("loss", "grad_norm"),
    "regression": ("loss", "grad_norm"),
    "apt": ("g/gan", "g/l1", "g/feature_matching", "d/gan", "d/real_logit", "d/fake_logit",
            "d/r1", "d/r2"),
}


def read(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def plot_stage(stage: str, rows: list[dict], out_png: str) -> None:
  names = [n for n in SERIES["apt" if stage.startswith(("apt", "l1")) else stage]
           if any(n in r for r in rows)]
  fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)
  for ax, name in zip(axes[0], names):
    points = [(r["step"], r[name]) for r in rows if name in r]
    ax.plot(*zip(*points), lw=1.2)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    if name in ("d/r1", "d/r2") or (name == "loss" and stage != "vae"):
      ax.set_yscale("log")
  fig.suptitle(f"toy {stage}", fontsize=10)
  fig.tight_layout()
  fig.savefig(out_png, dpi=110)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("out", help="the run's OUT folder (experiments/toy/run.py --out)")
  parser.add_argument("--to", default=os.path.join(os.path.dirname(__file__), "curves"))
  args = parser.parse_args(argv)
  os.makedirs(args.to, exist_ok=True)
  for stage in sorted(os.listdir(args.out)):
    path = os.path.join(args.out, stage, "metrics.jsonl")
    if os.path.isfile(path):
      png = os.path.join(args.to, f"{stage}.png")
      plot_stage(stage, read(path), png)
      print(f"wrote {png}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
