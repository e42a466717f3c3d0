"""VideoLQ (Chan et al., CVPR 2022, RealBasicVSR): 50 real-world LQ clips without GT, the real
benchmark of SeedVR2 (no-reference metrics). One `test` split: `lq`, `name`, `fps`."""

from __future__ import annotations

import tensorflow_datasets as tfds

from seedvr2_jax.data.tfds_builders import common


class Videolq(tfds.core.GeneratorBasedBuilder):
  """VideoLQ: real-world low-quality clips (LQ only)."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  manual_dir = the VideoLQ folder (as RealBasicVSR / mmagic distribute it):
    <000..049>/*.png         LQ frames (or LQ/<clip>/..., DOVE's layout); clips may also be
                             video files"""

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=f"{self.__doc__}\n\nLayout:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}",
        features=common.features("lq"),
        homepage="https://github.com/ckkelvinchan/RealBasicVSR")

  def _split_generators(self, dl_manager):
    return {"test": self._generate_examples(dl_manager.manual_dir)}

  def _generate_examples(self, root):
    for name, path in common.list_clips(common.find_dir(str(root), ("LQ", "."), "LQ")).items():
      lq, fps = common.read_pngs(path)
      yield name, {"lq": lq, "name": name, "fps": fps}
