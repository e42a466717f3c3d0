"""tfds builders (array_record, usable without TensorFlow) of the SeedVR2 benchmarks and of the
sample clips, made from local folders; `builder` finds them by name in `BUILDERS`:

  from seedvr2_jax.data import tfds_builders
  tfds_builders.build("udm10", manual_dir="/data/UDM10", data_dir="/data/tfds")
  source = tfds_builders.builder("udm10", data_dir="/data/tfds").as_data_source(split="test")
  hq = png.decode_frames(source[0]["hq"])  # (T, H, W, 3) uint8

Names: spmcs, udm10, reds30, youhq40 (configs `degraded` (default) / `given`), videolq,
seedvr2_samples (configs `default` / `small`). Layouts: each builder's MANUAL_DOWNLOAD_INSTRUCTIONS.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from seedvr2_jax.data.tfds_builders import paired, samples, videolq

BUILDERS = {b.name: b for b in (paired.Spmcs, paired.Udm10, paired.Reds30, paired.Youhq40,
                                videolq.Videolq, samples.Seedvr2Samples)}


def builder(name: str, **kwargs) -> tfds.core.DatasetBuilder:
  """The builder of dataset `name` ("name[/config][:version]"): a class of BUILDERS, else what
  `tfds.builder` finds (another registered or prepared dataset). kwargs: DatasetBuilder
  arguments (data_dir, file_format, ...)."""
  dataset, builder_kwargs = tfds.core.naming.parse_builder_name_kwargs(name, **kwargs)
  if not dataset.namespace and dataset.name in BUILDERS:
    return BUILDERS[dataset.name](**builder_kwargs)
  return tfds.builder(name, **kwargs)


def build(name: str, *, data_dir: str, manual_dir: str | None = None,
          overwrite: bool = False) -> tfds.core.DatasetBuilder:
  """Builds dataset `name` (optionally "name/config") from `manual_dir` into `data_dir`."""
  dataset = builder(name, data_dir=data_dir, file_format="array_record")
  mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  dataset.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, download_mode=mode))
  return dataset
