"""Held-out evaluation of the toy models: real clips never used in training, degraded once with
a fixed seed, restored 2x by each model (the `restore` pipeline: resize, encode, one DiT step,
decode, wavelet colour fix) and by bicubic upsampling; PSNR / SSIM / LPIPS against the HQ clip.

Training uses frames [0, 200) of bikes.mp4 and [0, 100) of bigbuckbunny.mp4; held out are the
rest of both and all of carphone_pristine.mp4 (another video), cut into 21-frame clips.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pool as pool_lib
from flax import nnx

from seedvr2_jax.data import degradations
from seedvr2_jax.diffusion import condition
from seedvr2_jax.infer import one_step
from seedvr2_jax.infer.options import RestoreOptions
from seedvr2_jax.metrics import fidelity
from seedvr2_jax.metrics import lpips as lpips_lib

TRAIN = (("bikes.mp4", 0, 200), ("bigbuckbunny.mp4", 0, 100))
HELDOUT = (("bikes", "bikes.mp4", 200), ("bigbuckbunny", "bigbuckbunny.mp4", 100),
           ("carphone", "carphone_pristine.mp4", 0))
CLIP_FRAMES = 21
DEGRADATION_SEED = 1234


def heldout_clips(samples_dir: str, frames: int = CLIP_FRAMES, max_clips: int | None = None,
                  max_size: int | None = None) -> list[tuple[str, np.ndarray]]:
  """[(name, HQ clip (frames, H, W, 3) uint8)]: non-overlapping clips of each held-out range,
  centre-cropped to multiples of 16 (and to `max_size` pixels a side if given)."""
  out = []
  for name, file, start in HELDOUT:
    video = pool_lib.read_video(f"{samples_dir}/{file}", start)
    h, w = (s - s % 16 if max_size is None else min(s - s % 16, max_size)
            for s in video.shape[1:3])
    top, left = (video.shape[1] - h) // 2, (video.shape[2] - w) // 2
    for i in range(len(video) // frames)[:max_clips]:
      out.append((f"{name}_{i}",
                  np.ascontiguousarray(video[i * frames:(i + 1) * frames,
                                             top:top + h, left:left + w])))
  return out


def degrade(clips, degradation) -> list[np.ndarray]:
  return [degradations.degrade_clip(hq, degradation, (DEGRADATION_SEED, i))
          for i, (_, hq) in enumerate(clips)]


def bicubic(lq_thwc: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  """The LQ clip upsampled to the HQ size as the model's input is (uint8)."""
  x = condition.lq_pixels_at(condition.to_unit(jnp.asarray(lq_thwc)[None]),
                             (1, lq_thwc.shape[0], *hw, 3))[0]
  return np.asarray(one_step.to_uint8(x))


class Restore:
  """lq (T, h, w, 3) uint8, HQ (H, W) -> restored (T, H, W, 3) uint8 (fixed noise seed) with the
  model set by `use`; one compilation per clip size for all models of one architecture."""

  def __init__(self):
    self.models, self._restorers = None, {}

  def use(self, dit, vae, txt) -> None:
    self.models = (dit, vae, txt)
    for restorer in self._restorers.values():
      restorer.dit_state, restorer.vae_state = nnx.state(dit), nnx.state(vae)
      restorer.txt = jnp.asarray(txt)[None]

  def __call__(self, lq_thwc, hw):
    if hw not in self._restorers:
      self._restorers[hw] = one_step.Restorer(*self.models, RestoreOptions(), hw)
    keys = jax.random.split(jax.random.key(0), 1)
    return np.asarray(self._restorers[hw](lq_thwc[None], keys)[0])


class Scorer:
  """PSNR (RGB), SSIM (Y of YCbCr) and LPIPS-alex of uint8 clips against their references."""

  def __init__(self):
    lp = lpips_lib.load_weights()
    unit = lambda v: jnp.asarray(v, jnp.float32) / 255.0
    self._score = jax.jit(lambda x, y: (
        fidelity.psnr(unit(x), unit(y)), fidelity.ssim_bt601(unit(x), unit(y)),
        lpips_lib.lpips(lp, unit(x), unit(y))))

  def __call__(self, out_thwc: np.ndarray, hq_thwc: np.ndarray) -> dict:
    """Means over frames."""
    scores = [np.asarray(s) for s in self._score(out_thwc, hq_thwc)]
    return {k: float(np.mean(v)) for k, v in zip(("psnr", "ssim", "lpips"), scores)}


def table(results: dict[str, dict[str, dict]]) -> dict[str, dict]:
  """{method: {clip: metrics}} -> {method: mean metrics over clips}."""
  return {method: {m: float(np.mean([c[m] for c in clips.values()]))
                   for m in ("psnr", "ssim", "lpips")}
          for method, clips in results.items()}
