"""Model FLOPs of one NaDiT forward (matmul work only; element-wise ops are not counted).

linear = 2 * tokens * (in * out) for every Linear a stream passes through;
attention = sum over layers and windows of 4 * (n_i + L)^2 * heads * head_dim
(QK^T and PV over the unpadded window sequence [n_i video tokens + L text tokens]).
Training costs 3x a forward (6 * params * tokens for the linear part) plus recompute.
"""

from __future__ import annotations

import numpy as np

from seedvr2_jax.models.dit import window_plan
from seedvr2_jax.models.dit.config import NaDiTConfig


def token_grid(cfg: NaDiTConfig, latent_thw: tuple[int, int, int]) -> tuple[int, int, int]:
  t, h, w = latent_thw
  pt, ph, pw = cfg.patch_size
  return -(-t // pt), h // ph, w // pw


def forward_flops(cfg: NaDiTConfig, latent_thw: tuple[int, int, int], txt_len: int) -> dict:
  """{"linear", "attention", "total"} FLOPs of one sample's forward."""
  grid = token_grid(cfg, latent_thw)
  n_vid = int(np.prod(grid))
  d, inner = cfg.vid_dim, cfg.heads * cfg.head_dim
  mlp = (3 if cfg.mlp_type == "swiglu" else 2) * d * cfg.mlp_hidden
  attn_proj = d * 3 * inner + inner * d
  linear = 0
  for layer in range(cfg.num_layers):
    txt_mlp = 0 if cfg.video_only(layer) else mlp
    linear += 2 * n_vid * (attn_proj + mlp) + 2 * txt_len * (attn_proj + txt_mlp)
  patch = int(np.prod(cfg.patch_size))
  linear += 2 * n_vid * d * patch * (cfg.vid_in_channels + cfg.vid_out_channels)
  if cfg.has_txt_in:
    linear += 2 * txt_len * cfg.txt_in_dim * d
  attention = 0
  for window, method in zip(cfg.window, cfg.window_method):
    lengths = window_plan.window_plan(grid, window, method).lengths.astype(np.int64) + txt_len
    attention += int(4 * np.sum(lengths ** 2) * inner)
  return {"linear": linear, "attention": attention, "total": linear + attention}
