"""OUT/tables.md from results.json: our numbers beside the paper's (arXiv 2506.05301), laid out
as its Table 1 (synthetic sets: PSNR / SSIM / LPIPS / DISTS; VideoLQ: NIQE / MUSIQ / CLIP-IQA /
DOVER) and Table 4 (no-reference metrics on the synthetic sets)."""

from __future__ import annotations

from seedvr2_jax.tables import paper

_TITLES = {"psnr": "PSNR↑", "ssim": "SSIM↑", "lpips": "LPIPS↓", "dists": "DISTS↓",
           "niqe": "NIQE↓", "musiq": "MUSIQ↑", "clipiqa": "CLIP-IQA↑", "dover": "DOVER↑",
           "ewarp": "E*warp↓", "vmaf": "VMAF↑"}
_DECIMALS = {"psnr": 2, "musiq": 2, "vmaf": 2}


def _number(metric: str, value: float | None) -> str:
  return "–" if value is None else f"{value:.{_DECIMALS.get(metric, 4)}f}"


def _cell(metric: str, ours: float | None, published: float | None) -> str:
  """"ours", or "ours / paper (ours - paper)" where the paper has the number."""
  if published is None:
    return _number(metric, ours)
  if ours is None:
    return f"– / {_number(metric, published)}"
  diff = ours - published
  return (f"{_number(metric, ours)} / {_number(metric, published)} "
          f"({'+' if diff >= 0 else '−'}{_number(metric, abs(diff))})")


def _table(results: dict, table: str, metrics: tuple[str, ...], datasets: list[str]) -> list[str]:
  lines = ["| dataset | row | " + " | ".join(_TITLES[m] for m in metrics) + " |",
           "|---|---|" + "---|" * len(metrics)]
  for builder in datasets:
    entry = results["datasets"][builder]
    for label, row in entry["rows"].items():
      published = paper.published(table, entry["name"], paper.method_of(label))
      cells = [_cell(m, row["mean"].get(m), published.get(m)) for m in metrics]
      lines.append(f"| {builder} | {label} | " + " | ".join(cells) + " |")
  return lines


def markdown(results: dict) -> str:
  """The tables.md text."""
  synthetic = [b for b, d in results["datasets"].items() if d["has_reference"]]
  real = [b for b, d in results["datasets"].items() if not d["has_reference"]]
  clips = {b: len(next(iter(d["rows"].values()))["clips"]) for b, d in results["datasets"].items()}
  out = ["# SeedVR2 tables (seedvr2-jax)", "",
         "Cells: ours, or ours / paper (difference) where SeedVR2 (arXiv 2506.05301, Tables 1 "
         "and 4) publishes the number for that row (rows labelled bicubic, SeedVR2-3B or "
         "SeedVR2-7B). Means over clips of per-frame means; protocol in docs/tables.md.",
         "Clips: " + ", ".join(f"{b} {n}" for b, n in clips.items()) + ".", ""]
  if results["unavailable_metrics"]:
    out += ["Not computed (weights missing): "
            + "; ".join(f"{m}: {why}" for m, why in results["unavailable_metrics"].items()), ""]
  if synthetic:
    out += ["## Table 1: synthetic sets", ""]
    out += _table(results, "1", paper.TABLE1_FULL_REFERENCE, synthetic) + [""]
  if real:
    out += ["## Table 1: real set", ""]
    out += _table(results, "1", paper.TABLE1_NO_REFERENCE, real) + [""]
  if synthetic:
    out += ["## Table 4: no-reference metrics on the synthetic sets", "",
            "E*warp and VMAF are not computed by seedvr2-jax (paper values shown).", ""]
    out += _table(results, "4", paper.TABLE4_METRICS, synthetic) + [""]
  out += ["## Restoration time", "",
          "Seconds include compiling for the first clip of each size.", "",
          "| dataset | row | frames | restore s | frames/s |",
          "|---|---|---|---|---|"]
  for builder, entry in results["datasets"].items():
    for label, row in entry["rows"].items():
      rate = row["frames"] / row["restore_seconds"] if row["restore_seconds"] else 0.0
      out.append(f"| {builder} | {label} | {row['frames']} | {row['restore_seconds']:.1f} | "
                 f"{rate:.2f} |")
  return "\n".join(out) + "\n"
