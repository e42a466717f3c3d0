"""Quality metrics in JAX / numpy: PSNR, SSIM (pyiqa's convention; `ssim_bt601` the BT.601
studio-range one), LPIPS-alex, DISTS (full-reference) and NIQE (no-reference).

Full-reference metrics take (..., H, W, 3) float images in [0, 1] and return one value per image,
shape (...). `lpips.lpips(params, x, y)` is the differentiable loss, `make_lpips()` a jitted
metric; `suite` names and loads the metrics of `evaluate` (the `seedvr2-jax evaluate` command)
and `tables`.
"""

from seedvr2_jax.metrics import lpips
from seedvr2_jax.metrics.fidelity import psnr, ssim, ssim_bt601
from seedvr2_jax.metrics.lpips import load_weights, make_lpips

__all__ = ["psnr", "ssim", "ssim_bt601", "lpips", "make_lpips", "load_weights"]
