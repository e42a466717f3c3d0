"""The published numbers of SeedVR2 (Wang et al., "SeedVR2: One-Step Video Restoration via
Diffusion Adversarial Post-Training", arXiv 2506.05301 v2): Table 1 (main comparison) and the
appendix's Table 4 (no-reference metrics, E*warp and VMAF on the synthetic sets), for the rows
this project can reproduce: SeedVR2-3B, SeedVR2-7B and bicubic upsampling.

DOVER is the technical score of the official DOVER code times 100 (as the paper prints it).
AIGC28 (Table 1) is not public and is therefore left out.
"""

TABLE1_FULL_REFERENCE = ("psnr", "ssim", "lpips", "dists")
TABLE1_NO_REFERENCE = ("niqe", "musiq", "clipiqa", "dover")
TABLE4_METRICS = ("niqe", "musiq", "clipiqa", "dover", "ewarp", "vmaf")

# {dataset: {method: (PSNR, SSIM, LPIPS, DISTS)}}
TABLE1_SYNTHETIC = {
    "spmcs": {"SeedVR2-3B": (22.97, 0.646, 0.306, 0.131),
              "SeedVR2-7B": (22.90, 0.638, 0.322, 0.134)},
    "udm10": {"SeedVR2-3B": (25.61, 0.784, 0.218, 0.106),
              "SeedVR2-7B": (26.26, 0.798, 0.203, 0.101)},
    "reds30": {"SeedVR2-3B": (21.90, 0.598, 0.350, 0.135),
               "SeedVR2-7B": (22.27, 0.606, 0.337, 0.127)},
    "youhq40": {"SeedVR2-3B": (22.10, 0.595, 0.284, 0.122),
                "SeedVR2-7B": (22.46, 0.600, 0.274, 0.110)},
}
# {dataset: {method: (NIQE, MUSIQ, CLIP-IQA, DOVER)}}
TABLE1_REAL = {
    "videolq": {"SeedVR2-3B": (4.687, 51.09, 0.295, 8.176),
                "SeedVR2-7B": (4.948, 45.76, 0.257, 7.236)},
}
# {dataset: {method: (NIQE, MUSIQ, CLIP-IQA, DOVER, E*warp, VMAF)}}
TABLE4 = {
    "spmcs": {"Bicubic": (9.105, 24.65, 0.3448, 0.9490, 0.395, 5.24),
              "SeedVR2-3B": (3.862, 63.52, 0.4736, 9.754, 0.715, 39.96),
              "SeedVR2-7B": (3.668, 63.37, 0.4367, 9.333, 0.845, 39.86)},
    "udm10": {"Bicubic": (8.625, 22.70, 0.3377, 1.592, 0.506, 12.40),
              "SeedVR2-3B": (4.545, 56.59, 0.3695, 9.652, 0.777, 52.19),
              "SeedVR2-7B": (4.518, 53.28, 0.3459, 8.907, 0.830, 52.13)},
    "reds30": {"Bicubic": (9.058, 19.43, 0.2538, 1.459, 0.852, 9.21),
               "SeedVR2-3B": (4.034, 50.90, 0.2601, 6.365, 4.010, 41.73),
               "SeedVR2-7B": (3.825, 50.79, 0.2622, 6.002, 4.084, 39.93)},
    "youhq40": {"Bicubic": (9.241, 24.78, 0.3162, 1.276, 0.606, 4.82),
                "SeedVR2-3B": (3.722, 63.34, 0.4649, 13.34, 1.376, 36.49),
                "SeedVR2-7B": (3.378, 66.01, 0.4687, 12.98, 1.725, 34.07)},
}


def method_of(label: str) -> str | None:
  """The paper's method a row label stands for ("bicubic", "SeedVR2-3B", "seedvr2-7b", ...,
  case-insensitive), or None."""
  names = {"bicubic": "Bicubic", "seedvr2-3b": "SeedVR2-3B", "seedvr2-7b": "SeedVR2-7B"}
  return names.get(label.lower())


def published(table: str, dataset: str, method: str | None) -> dict[str, float]:
  """{metric: value} the paper gives for `method` on `dataset` in `table` ("1" or "4")."""
  if method is None:
    return {}
  if table == "4":
    return dict(zip(TABLE4_METRICS, TABLE4.get(dataset, {}).get(method, ())))
  if dataset in TABLE1_REAL:
    return dict(zip(TABLE1_NO_REFERENCE, TABLE1_REAL[dataset].get(method, ())))
  return dict(zip(TABLE1_FULL_REFERENCE, TABLE1_SYNTHETIC.get(dataset, {}).get(method, ())))
