"""Random-access sources for the Grain pipeline (`grain.MapDataset.source(...)` accepts them):
clips from a folder of videos and images or from a tfds array_record dataset of PNG-frame clips,
and the records of a `precompute-latents` directory.

`source[i]` is a `Clip` handle (frame count and size known from the start-up index); its pixels
are decoded only by `clip.read(start, span)`, i.e. in the worker that needs them. Every host
indexes only its shard (`process_index::process_count`) of the files or records, so hosts see
disjoint data and no host reads the others' files. Unreadable files met while indexing are
skipped with one warning naming them all (`source.skipped`); `read` raises InputError for files
that turn out corrupt later, which the pipeline skips and counts.

A sources spec (config `data.sources`) is a comma-separated list (or a list) of entries
`DIR` or `tfds:NAME[:SPLIT]`, each optionally followed by `*WEIGHT` (default 1), e.g.
`/data/videos*3,tfds:seedvr2_samples:train`.

A latents directory (written by data/precompute.py):
  latents-SSSSS-of-NNNNN.array_record   records: msgpack {hq_moments, lq_moments, bucket, key}
  meta.json                             buckets, records' buckets per shard, VAE, degradation
  text.npz                              the text embeddings that go with the VAE (pos[, neg])
`LatentSource[i]` is a `LatentRecord` handle (bucket known from meta.json), read on `read()`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
from collections.abc import Sequence

import av
import grain
import numpy as np
from flax import serialization

from seedvr2_jax.data import png, video_io
from seedvr2_jax.errors import ConfigError, InputError

log = logging.getLogger("seedvr2_jax.data")

_PROBE_THREADS = 8
LATENTS_FORMAT = "seedvr2-jax-latents"
LATENTS_VERSION = 1
LATENTS_META = "meta.json"
LATENTS_TEXT = "text.npz"


@dataclasses.dataclass(frozen=True, eq=False)
class Clip:
  """Record `index` of `source`: (frames, height, width) known, pixels decoded on `read`."""

  source: object
  index: int
  frames: int
  height: int
  width: int

  @property
  def key(self) -> str:
    return self.source.key(self.index)

  def read(self, start: int, span: int) -> np.ndarray:
    """Frames start .. start + span - 1 as (span, H, W, 3) uint8; InputError if unreadable."""
    return self.source.read(self.index, start, span)


def _checked(frames: list[np.ndarray], key: str, start: int, span: int,
             hw: tuple[int, int]) -> np.ndarray:
  if len(frames) != span:
    raise InputError(f"{key}: decoded {len(frames)} of frames {start}..{start + span - 1} "
                     f"(truncated or corrupt)")
  if any(f.shape[:2] != hw for f in frames):
    raise InputError(f"{key}: frame size changes inside the clip")
  return np.stack(frames)


def list_media(root: str) -> list[str]:
  """Video and image files under `root` (recursive, hidden entries skipped), sorted."""
  if not os.path.isdir(root):
    raise InputError(f"{root}: no such folder")
  found = []
  for folder, dirs, files in os.walk(root, followlinks=True):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    found += [os.path.join(folder, f) for f in files if not f.startswith(".")
              and f.lower().endswith(video_io.VIDEO_EXTENSIONS + video_io.IMAGE_EXTENSIONS)]
  return sorted(found)


def _probe(path: str) -> video_io.MediaInfo | str:
  try:
    return video_io.probe(path)
  except InputError as e:
    return str(e)


class FolderSource:
  """This host's share of the videos and images under `root` (images are 1-frame clips)."""

  def __init__(self, root: str, *, process_index: int = 0, process_count: int = 1):
    self.name = root
    files = list_media(root)
    if not files:
      raise InputError(f"{root}: holds no videos ({'/'.join(video_io.VIDEO_EXTENSIONS)}) or images")
    mine = files[process_index::process_count]
    if not mine:
      raise InputError(f"{root}: {len(files)} file(s) cannot give each of {process_count} "
                       f"hosts one (host {process_index} gets none)")
    with concurrent.futures.ThreadPoolExecutor(_PROBE_THREADS) as pool:
      probed = list(pool.map(_probe, mine))
    self.infos = [p for p in probed if isinstance(p, video_io.MediaInfo)]
    self.skipped = [p for p in probed if isinstance(p, str)]
    if self.skipped:
      log.warning("%s: skipped %d unreadable file(s): %s", root, len(self.skipped),
                  "; ".join(self.skipped))
    if not self.infos:
      raise InputError(f"{root}: none of host {process_index}'s {len(mine)} file(s) is a "
                       f"readable video or image")

  def __len__(self) -> int:
    return len(self.infos)

  def __getitem__(self, i: int) -> Clip:
    info = self.infos[i]
    return Clip(self, i, info.frames, info.height, info.width)

  def key(self, i: int) -> str:
    return self.infos[i].path

  def read(self, i: int, start: int, span: int) -> np.ndarray:
    info = self.infos[i]
    try:
      if info.kind == "image":
        frames = list(video_io.read_frames(info))[start:start + span]
      else:
        frames = video_io.read_video(info, start, span)
    except av.FFmpegError as e:
      raise InputError(f"{info.path}: decoding failed ({e.__class__.__name__})") from None
    return _checked(frames, info.path, start, span, (info.height, info.width))


class TfdsSource:
  """This host's share of a tfds array_record dataset whose `feature` holds a clip as a
  sequence of PNG frames (the builders in `data/tfds_builders`). Indexing reads each record of
  the shard once (frame count, and the size from the first PNG header)."""

  def __init__(self, name: str, *, split: str = "train", data_dir: str | None = None,
               feature: str = "hq", process_index: int = 0, process_count: int = 1):
    self.name, self.split, self.data_dir, self.feature = name, split, data_dir, feature
    self._data = None
    total = len(self.data)
    mine = range(process_index, total, process_count)
    if not mine:
      raise InputError(f"tfds:{name}:{split}: {total} record(s) cannot give each of "
                       f"{process_count} hosts one (host {process_index} gets none)")
    indices, shapes, self.skipped = [], [], []
    for i in mine:
      frames = self.data[i][feature]
      try:
        shapes.append((len(frames), *png.size(frames[0])))
        indices.append(i)
      except (InputError, IndexError):
        self.skipped.append(f"tfds:{name}:{split}[{i}]")
    if self.skipped:
      log.warning("tfds:%s:%s: skipped %d record(s) without readable frames: %s", name, split,
                  len(self.skipped), "; ".join(self.skipped))
    if not indices:
      raise InputError(f"tfds:{name}:{split}: none of host {process_index}'s records holds "
                       f"readable frames")
    self.indices = np.asarray(indices, np.int64)
    self.shapes = np.asarray(shapes, np.int64)

  @property
  def data(self):
    """The tfds data source, opened on first use (also after unpickling in a worker)."""
    if self._data is None:
      import tensorflow_datasets as tfds

      from seedvr2_jax.data import tfds_builders
      where = f"tfds:{self.name}:{self.split} in {self.data_dir or 'the default tfds data dir'}"
      try:
        builder = tfds_builders.builder(self.name, data_dir=self.data_dir)
        prepared = builder.is_prepared()
        if prepared:
          self._data = builder.as_data_source(split=self.split)
      except (tfds.core.registered.DatasetNotFoundError, ValueError, KeyError) as e:
        raise InputError(f"{where}: {str(e).splitlines()[0]}") from None
      if not prepared:
        raise InputError(f"{where}: not built (build it with "
                         f"seedvr2_jax.data.tfds_builders.build)")
      if self.feature not in self._data.dataset_info.features:
        raise InputError(f"tfds:{self.name} has no feature {self.feature!r}")
    return self._data

  def __getstate__(self):
    return {**self.__dict__, "_data": None}

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> Clip:
    return Clip(self, i, *(int(v) for v in self.shapes[i]))

  def key(self, i: int) -> str:
    return f"tfds:{self.name}:{self.split}[{self.indices[i]}]"

  def read(self, i: int, start: int, span: int) -> np.ndarray:
    frames = self.data[int(self.indices[i])][self.feature][start:start + span]
    try:
      decoded = [png.decode(f) for f in frames]
    except InputError as e:
      raise InputError(f"{self.key(i)}: {e}") from None
    return _checked(decoded, self.key(i), start, span, tuple(self.shapes[i, 1:]))


def parse_spec(spec: str | Sequence[str]) -> list[tuple[str, float]]:
  """Sources spec -> [(entry, weight)]; ConfigError for an empty spec or a bad weight."""
  entries = spec.split(",") if isinstance(spec, str) else list(spec)
  out = []
  for entry in (e.strip() for e in entries):
    if not entry:
      continue
    target, _, weight = entry.partition("*")
    try:
      w = float(weight) if weight else 1.0
    except ValueError:
      raise ConfigError(f"data source {entry!r}: weight {weight!r} is not a number") from None
    if not w > 0:
      raise ConfigError(f"data source {entry!r}: weight must be positive")
    out.append((target.strip(), w))
  if not out:
    raise ConfigError("no data sources given (set data.sources to a folder or tfds:NAME)")
  return out


def open_sources(spec: str | Sequence[str], *, tfds_data_dir: str | None = None,
                 process_index: int = 0, process_count: int = 1) -> list[tuple[object, float]]:
  """[(source, weight)] for this host from a sources spec."""
  out = []
  for target, weight in parse_spec(spec):
    shard = dict(process_index=process_index, process_count=process_count)
    if target.startswith("tfds:"):
      name, _, split = target[len("tfds:"):].partition(":")
      source = TfdsSource(name, split=split or "train", data_dir=tfds_data_dir or None,
                          **shard)
    else:
      source = FolderSource(target, **shard)
    out.append((source, weight))
  return out


def latents_shard_name(shard: int, shards: int) -> str:
  return f"latents-{shard:05d}-of-{shards:05d}.array_record"


def latent_record(hq_moments: np.ndarray, lq_moments: np.ndarray, bucket: int, key: str) -> bytes:
  """One record of a latents shard, as `LatentSource.read` gives it back."""
  return serialization.msgpack_serialize({"hq_moments": hq_moments, "lq_moments": lq_moments,
                                          "bucket": bucket, "key": key})


@dataclasses.dataclass(frozen=True, eq=False)
class LatentRecord:
  """Record `index` of a LatentSource (bucket known, moments read on `read`)."""

  source: LatentSource
  index: int
  bucket: int

  @property
  def key(self) -> str:
    return f"{self.source.folder}[{self.source.indices[self.index]}]"

  def read(self) -> dict:
    return self.source.read(self.index)


class LatentSource:
  """This host's share (records process_index::process_count) of a precompute-latents
  directory; `source[i]` is a LatentRecord, `read(i)` the stored record."""

  def __init__(self, folder: str, *, process_index: int = 0, process_count: int = 1):
    self.folder = os.path.abspath(folder)
    try:
      with open(os.path.join(self.folder, LATENTS_META)) as f:
        self.meta = json.load(f)
    except (OSError, ValueError) as e:
      raise InputError(f"{folder}: not a latents directory ({e.__class__.__name__}: {e}; make "
                       f"one with `seedvr2-jax precompute-latents`)") from None
    if self.meta.get("format") != LATENTS_FORMAT:
      raise InputError(f"{folder}: unknown latents format {self.meta.get('format')!r}")
    record_buckets = [b for shard in self.meta["shards"] for b in shard["buckets"]]
    self.indices = np.arange(process_index, len(record_buckets), process_count)
    if not len(self.indices):
      raise InputError(f"{folder}: {len(record_buckets)} record(s) cannot give each of "
                       f"{process_count} hosts one (host {process_index} gets none)")
    self.buckets = np.asarray(record_buckets, np.int64)[self.indices]
    self._data = None

  @property
  def data(self) -> grain.sources.ArrayRecordDataSource:
    if self._data is None:
      self._data = grain.sources.ArrayRecordDataSource(
          [os.path.join(self.folder, s["file"]) for s in self.meta["shards"]])
    return self._data

  def __getstate__(self):
    return {**self.__dict__, "_data": None}

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> LatentRecord:
    return LatentRecord(self, i, int(self.buckets[i]))

  def read(self, i: int) -> dict:
    try:
      return serialization.msgpack_restore(self.data[int(self.indices[i])])
    except (ValueError, TypeError) as e:
      raise InputError(f"{self.folder}[{self.indices[i]}]: unreadable record ({e})") from None
