"""Full-reference quality metrics in JAX: PSNR, SSIM (BT.601 Y) and LPIPS-alex.

All take (..., H, W, 3) float images in [0, 1] and return one value per image, shape (...).
`lpips.lpips(params, x, y)` is the differentiable loss, `make_lpips()` a jitted metric;
`evaluate` (the `seedvr2-jax evaluate` command) compares two videos, images or frame folders.
"""

from seedvr2_jax.metrics import lpips
from seedvr2_jax.metrics.fidelity import psnr, ssim
from seedvr2_jax.metrics.lpips import load_weights, make_lpips

__all__ = ["psnr", "ssim", "lpips", "make_lpips", "load_weights"]
