"""The synthetic video SR benchmarks of SeedVR2 (Table 1): SPMCS, UDM10, REDS30, YouHQ40, built
from local folders (`manual_dir`) into array_record, one `test` split, one record per clip:
`hq`, `lq` (PNG frame sequences), `name`, `fps`.

Configs: `degraded` (default; the papers' protocol, "LQ made with the same degradation as
training, x4"): LQ = `degrade_clip` of the GT with a fixed per-clip seed (common.LQ_SEED), GT
centre-cropped to multiples of 4; any LQ folder is ignored. `given`: LQ read from the LQ folder
(e.g. the published bicubic / blur-down sets), GT as is.

In each layout, `<clip>` is a folder of frames (sorted by name) or a video file; the first
existing folder of each list is used.
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from seedvr2_jax.data.tfds_builders import common
from seedvr2_jax.errors import InputError


@dataclasses.dataclass
class PairedConfig(tfds.core.BuilderConfig):
  synthesize_lq: bool = True


_CONFIGS = [
    PairedConfig(name="degraded", synthesize_lq=True,
                 description="LQ = fixed-seed x4 training degradation of the GT"),
    PairedConfig(name="given", synthesize_lq=False,
                 description="LQ read from the dataset's LQ folder"),
]


class PairedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """GT clips (+ LQ clips with the `given` config) under `manual_dir`."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = _CONFIGS
  GT_DIRS: tuple[str, ...] = ("GT",)
  LQ_DIRS: tuple[str, ...] = ("LQ",)
  HOMEPAGE = ""

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=f"{self.__doc__}\n\nLayout:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}",
        features=common.features("hq", "lq"), homepage=self.HOMEPAGE)

  def _split_generators(self, dl_manager):
    return {"test": self._generate_examples(dl_manager.manual_dir)}

  def _generate_examples(self, root):
    gt_dir = common.find_dir(str(root), self.GT_DIRS, "GT")
    gt = common.list_clips(gt_dir)
    if not self.builder_config.synthesize_lq:
      lq_dir = common.find_dir(str(root), self.LQ_DIRS, "LQ")
      lq = common.list_clips(lq_dir)
      common.pair_clips(gt, lq, lq_dir)
    for name, path in gt.items():
      hq, fps = common.read_pngs(path)
      if self.builder_config.synthesize_lq:
        hq, lq_frames = common.synthesize_lq(name, hq)
      else:
        lq_frames, _ = common.read_pngs(lq[name])
        if len(lq_frames) != len(hq):
          raise InputError(f"{lq[name]}: {len(lq_frames)} LQ frames for {len(hq)} GT frames")
      yield name, {"hq": hq, "lq": lq_frames, "name": name, "fps": fps}


MMAGIC_LQ_DIRS = ("LQ", "BDx4", "BIx4")


def _mmagic_layout(name: str) -> str:
  return f"""\
  manual_dir = the {name} folder (as mmagic / DOVE distribute it):
    GT/<clip>/*.png          ground truth
    LQ/<clip>/*.png          (given) DOVE's LQ, else BDx4/ or BIx4/ (mmagic)"""


class Spmcs(PairedBuilder):
  """SPMCS (Tao et al., ICCV 2017): 30 test clips of 31 frames."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = _mmagic_layout("SPMCS")
  LQ_DIRS = MMAGIC_LQ_DIRS
  HOMEPAGE = "https://github.com/jiangsutx/SPMC_VideoSR"


class Udm10(PairedBuilder):
  """UDM10 (Yi et al., ICCV 2019): 10 test clips of 32 frames."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = _mmagic_layout("UDM10")
  LQ_DIRS = MMAGIC_LQ_DIRS
  HOMEPAGE = "https://github.com/psychopa4/PFNL"


class Reds30(PairedBuilder):
  """REDS30: the 30 clips (000-029, 100 frames of 1280x720) of the REDS validation set
  (Nah et al., NTIRE 2019), as in Upscale-A-Video and SeedVR. Assumption: the papers do not list
  the clips; the validation set is the only 30-clip set of REDS with public GT."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  manual_dir = the folder where val_sharp.zip (and val_sharp_bicubic.zip) were extracted:
    val/val_sharp/<000..029>/*.png             ground truth (or val_sharp/ or GT/)
    val/val_sharp_bicubic/X4/<clip>/*.png      (given) bicubic x4 (or val_sharp_bicubic/X4/
                                               or LQ/)"""
  GT_DIRS = ("val/val_sharp", "val_sharp", "GT")
  LQ_DIRS = ("val/val_sharp_bicubic/X4", "val_sharp_bicubic/X4", "LQ")
  HOMEPAGE = "https://seungjunnah.github.io/Datasets/reds.html"


class Youhq40(PairedBuilder):
  """YouHQ40: the 40-clip test set of YouHQ (Upscale-A-Video, Zhou et al., CVPR 2024)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  manual_dir = the YouHQ40 test folder:
    GT/<clip>/*.png or GT/<clip>.mp4           ground truth (or gt/ or HQ/)
    LQ/<clip>/*.png or LQ/<clip>.mp4           (given) LQ clips (or lq/)"""
  GT_DIRS = ("GT", "gt", "HQ")
  LQ_DIRS = ("LQ", "lq")
  HOMEPAGE = "https://github.com/sczhou/Upscale-A-Video"
