"""`seedvr2-jax precompute-latents`: VAE posteriors of a dataset's HQ and LQ clips, written once
so that training reads latents instead of decoding, degrading and encoding pixels (SeedVR:
"HQ/LQ latents and text embeddings are precomputed, a 4x training speed-up").

Each clip of the sources gives one example: its bucket (`resize=True`: the nearest-aspect
fitting bucket; else the largest fitting one), a crop and a degradation drawn from rng(seed,
source, clip), as the training pipeline makes them. HQ in [-1, 1]; LQ resized to the HQ size
(bicubic, antialiased, as train/latents.py) and encoded alike. Clips of one bucket are encoded
together, one per local device (1-D mesh over all local devices).

Stored per clip: the posterior moments (mean | logvar, (T', H/8, W/8, 2C)), not a sample, so
training draws a fresh sample each time it reads a clip (`hq_moments` / `lq_moments`, as
train/latents.py samples them). Output directory:
  latents-SSSSS-of-NNNNN.array_record   records: msgpack {hq_moments, lq_moments, bucket, key}
  meta.json                             buckets, records' buckets per shard, VAE, degradation
  text.npz                              the text embeddings that go with the VAE (pos[, neg])
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time

import grain
import jax
import ml_collections
import numpy as np
from flax import nnx, serialization

from seedvr2_jax.data import degradations, pipeline, sources
from seedvr2_jax.diffusion import condition
from seedvr2_jax.errors import InputError
from seedvr2_jax.models.vae import codec
from seedvr2_jax.models.vae.autoencoder import VideoAutoencoder
from seedvr2_jax.utils import atomic

FORMAT = "seedvr2-jax-latents"
VERSION = 1
META = "meta.json"
TEXT = "text.npz"


def shard_name(shard: int, shards: int) -> str:
  return f"latents-{shard:05d}-of-{shards:05d}.array_record"


def load_vae(ckpt_dir: str) -> tuple[VideoAutoencoder, dict[str, np.ndarray]]:
  """The VAE and text embeddings of a `seedvr2-jax convert` checkpoint (the DiT is not read)."""
  from seedvr2_jax.convert import bundle as bundle_lib
  from seedvr2_jax.convert import vae as vae_convert
  bundle = bundle_lib.load(ckpt_dir, dit=False)
  vae = nnx.merge(vae_convert.abstract_model(bundle.vae_cfg)[0], bundle.vae_state)
  return vae, {"pos": np.asarray(bundle.pos_emb, np.float32),
               "neg": np.asarray(bundle.neg_emb, np.float32)}


@functools.cache
def tiny_vae() -> tuple[VideoAutoencoder, dict[str, np.ndarray]]:
  """A tiny random VAE and text embedding, for runs without a checkpoint (tests, smoke runs);
  built once per process."""
  from seedvr2_jax.models.dit import config as dit_config
  from seedvr2_jax.models.vae import autoencoder
  from seedvr2_jax.models.vae.config import TINY, VAEConfig
  vae = autoencoder.random_init(VAEConfig(**TINY), 1)
  width = dit_config.official("3b", **dit_config.TINY["3b"]).txt_in_dim
  return vae, {"pos": np.asarray(jax.random.normal(jax.random.key(2), (58, width)))}


def make_encoder(vae: VideoAutoencoder, mesh: jax.sharding.Mesh, chunk_frames: int | None):
  """(hq uint8, lq uint8) batches -> (hq moments, lq moments), batch split over `mesh`; HQ and
  the resized LQ share one compiled encoder."""
  graph, state = nnx.split(vae)
  batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))

  @jax.jit
  def pixels(hq, lq):
    hq_px = condition.to_unit(hq)
    return hq_px, condition.lq_pixels_at(condition.to_unit(lq), hq_px.shape)

  @jax.jit
  def encode(state, x):
    return codec.encode(nnx.merge(graph, state), x, chunk_frames=chunk_frames)

  def run(hq, lq):
    hq_px, lq_px = pixels(jax.device_put(hq, batch), jax.device_put(lq, batch))
    return encode(state, hq_px), encode(state, lq_px)

  return run


def largest_fitting(clip, buckets, stride: int) -> int | None:
  """The fitting bucket of largest area (ties: more frames, then the first)."""
  fitting = [i for i, b in enumerate(buckets) if pipeline.fits(clip, b, stride)]
  return min(fitting, key=lambda i: (-buckets[i][1] * buckets[i][2], -buckets[i][0], i),
             default=None)


@dataclasses.dataclass
class _Writer:
  """Round-robin records over `shards` array_record files; remembers each record's bucket."""

  folder: str
  shards: int

  def __post_init__(self):
    from array_record.python import array_record_module
    self.files = [array_record_module.ArrayRecordWriter(
        os.path.join(self.folder, shard_name(s, self.shards)), "group_size:1")
        for s in range(self.shards)]
    self.buckets: list[list[int]] = [[] for _ in range(self.shards)]
    self.count = 0

  def write(self, record: dict) -> None:
    shard = self.count % self.shards
    self.files[shard].write(serialization.msgpack_serialize(record))
    self.buckets[shard].append(int(record["bucket"]))
    self.count += 1

  def close(self) -> None:
    for f in self.files:
      f.close()


def plan(opened, buckets, stride: int, resize_to_bucket: bool):
  """([(source number, clip number, clip, bucket)], keys of clips smaller than every bucket)."""
  choose = pipeline.nearest_aspect if resize_to_bucket else largest_fitting
  todo, too_small = [], []
  for k, (source, _) in enumerate(opened):
    for i in range(len(source)):
      b = choose(source[i], buckets, stride)
      if b is None:
        too_small.append(source[i].key)
      else:
        todo.append((k, i, source[i], b))
  return todo, too_small


def encode_all(todo, make: pipeline.PixelExample, encode, writer: _Writer, *, devices: int,
               seed: int, dtype: str, log) -> list[str]:
  """Makes, encodes (clips of one bucket `devices` at a time) and writes every planned clip;
  returns the errors of clips that failed to decode."""
  pending: dict[int, list[tuple[str, dict]]] = {}
  failed, start = [], time.perf_counter()

  def flush(b: int) -> None:
    items = pending.pop(b)
    padded = items + [items[-1]] * (-len(items) % devices)
    hq, lq = (np.stack([ex[k] for _, ex in padded]) for k in ("hq", "lq"))
    hq_m, lq_m = (np.asarray(m.astype(dtype)) for m in encode(hq, lq))
    for i, (key, _) in enumerate(items):
      writer.write({"hq_moments": hq_m[i], "lq_moments": lq_m[i], "bucket": b, "key": key})
    log(f"precompute: {writer.count} clips encoded ({time.perf_counter() - start:.1f} s)")

  for k, i, clip, b in todo:
    try:
      example = make(clip, b, np.random.default_rng([seed, k, i]))
    except InputError as e:
      failed.append(str(e))
      continue
    pending.setdefault(b, []).append((clip.key, example))
    if len(pending[b]) == devices:
      flush(b)
  for b in list(pending):
    flush(b)
  return failed


def run(data: str, out: str, *, checkpoint: str | None = None, shards: int = 1,
        config: ml_collections.ConfigDict | None = None, seed: int = 0,
        dtype: str = "float32", encode_chunk: int | None = 4, overwrite: bool = False,
        log=print) -> dict:
  """Encodes every clip of sources spec `data` into `out` (see the module doc). `config`: the
  pipeline's data config (buckets, frame_stride, resize, degradation, scale, tfds_data_dir);
  default `pipeline.default_config()`. Returns the meta dict."""
  out = os.path.abspath(out)
  if os.path.exists(out) and not overwrite:
    raise InputError(f"{out} exists (pass --overwrite to replace it)")
  if shards < 1:
    raise InputError(f"--shards {shards} must be >= 1")
  cfg = config or pipeline.default_config()
  buckets = pipeline.check_buckets(cfg.buckets, cfg.scale)
  stride = int(cfg.frame_stride)
  degradation = degradations.override(degradations.preset(cfg.degradation),
                                      {"scale": int(cfg.scale)})
  opened = sources.open_sources(data, tfds_data_dir=cfg.tfds_data_dir or None)
  todo, too_small = plan(opened, buckets, stride, bool(cfg.resize))
  if not todo:
    raise InputError(f"{data}: every clip is smaller than every bucket {list(buckets)} "
                     f"(frames x height x width, frame stride {stride})")
  if checkpoint is None:
    log("note: no --checkpoint given: encoding with a tiny randomly initialised VAE (for tests "
        "and demos; the latents are NOT those of the SeedVR2 VAE)")
    vae, text = tiny_vae()
  else:
    vae, text = load_vae(checkpoint)
    log(f"loaded the VAE and text embeddings of {checkpoint}")
  devices = jax.local_devices()
  encode = make_encoder(vae, jax.sharding.Mesh(np.asarray(devices), ("data",)), encode_chunk)
  make = pipeline.PixelExample(buckets, stride, bool(cfg.resize), degradation)

  with atomic.atomic_dir(out) as tmp:
    writer = _Writer(tmp, shards)
    failed = encode_all(todo, make, encode, writer, devices=len(devices), seed=seed,
                        dtype=dtype, log=log)
    writer.close()
    for what, keys in (("smaller than every bucket", too_small), ("that failed to decode",
                                                                   failed)):
      if keys:
        log(f"precompute: skipped {len(keys)} clip(s) {what}: {'; '.join(keys)}")
    skipped = sum(len(s.skipped) for s, _ in opened) + len(too_small) + len(failed)
    if not writer.count:
      raise InputError(f"{data}: no clip could be encoded ({skipped} skipped)")
    meta = {"format": FORMAT, "version": VERSION, "sources": data, "seed": seed,
            "buckets": [list(b) for b in buckets], "frame_stride": stride,
            "resize": bool(cfg.resize), "degradation": cfg.degradation, "scale": int(cfg.scale),
            "dtype": dtype, "vae": {"checkpoint": checkpoint or "tiny-random",
                                    "scaling_factor": vae.cfg.scaling_factor,
                                    "latent_channels": vae.cfg.latent_channels},
            "text": {"file": TEXT, "source": checkpoint or "tiny-random"},
            "records": writer.count, "skipped": skipped,
            "shards": [{"file": shard_name(s, shards), "buckets": writer.buckets[s]}
                       for s in range(shards)]}
    np.savez(os.path.join(tmp, TEXT), **text)
    with open(os.path.join(tmp, META), "w") as f:
      json.dump(meta, f, indent=1)
  log(f"wrote {writer.count} clips to {out} ({shards} shard(s), {skipped} skipped)")
  return meta


@dataclasses.dataclass(frozen=True, eq=False)
class LatentRecord:
  """Record `index` of a LatentSource (bucket known, moments read on `read`)."""

  source: object
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
      with open(os.path.join(self.folder, META)) as f:
        self.meta = json.load(f)
    except (OSError, ValueError) as e:
      raise InputError(f"{folder}: not a latents directory ({e.__class__.__name__}: {e}; make "
                       f"one with `seedvr2-jax precompute-latents`)") from None
    if self.meta.get("format") != FORMAT:
      raise InputError(f"{folder}: unknown latents format {self.meta.get('format')!r}")
    record_buckets = [b for shard in self.meta["shards"] for b in shard["buckets"]]
    self.indices = np.arange(process_index, len(record_buckets), process_count)
    if not len(self.indices):
      raise InputError(f"{folder}: {len(record_buckets)} record(s) cannot give each of "
                       f"{process_count} hosts one (host {process_index} gets none)")
    self.buckets = np.asarray(record_buckets, np.int64)[self.indices]
    self.skipped: list[str] = []
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


class LatentExample:
  """(record, bucket, rng) -> {"hq_moments", "lq_moments"} as stored."""

  def __init__(self, buckets):
    self.buckets = buckets

  def __call__(self, record: LatentRecord, bucket: int, rng: np.random.Generator) -> dict:
    stored = record.read()
    return {"hq_moments": stored["hq_moments"], "lq_moments": stored["lq_moments"]}


def latent_batches(cfg: ml_collections.ConfigDict, *, batch_size: int, seed: int, mesh,
                   process_index: int, process_count: int) -> pipeline.Batches:
  """Batches of precomputed moments (`cfg.latents`), bucketed as the pixel pipeline over the
  buckets of the latents, each drawn in proportion to its records (the same on every host).
  batch_size is per host."""
  source = LatentSource(cfg.latents, process_index=process_index, process_count=process_count)
  buckets = tuple(tuple(b) for b in source.meta["buckets"])
  counts = np.bincount([b for s in source.meta["shards"] for b in s["buckets"]],
                       minlength=len(buckets))
  members = [[[source[i] for i in range(len(source)) if source.buckets[i] == b]
              for b in range(len(buckets))]]

  def describe(b: int) -> str:
    return (f"{cfg.latents}: no record of bucket {'x'.join(map(str, buckets[b]))} for host "
            f"{process_index} of {process_count}")

  streams = pipeline.bucket_streams(members, [1.0], seed, counts > 0, describe)
  schedule = pipeline.BucketSchedule([(0, counts / counts.sum())], seed)
  examples = pipeline.Examples(streams, schedule, batch_size, seed, process_index,
                               LatentExample(buckets))
  return pipeline.Batches(examples, cfg, mesh, int(source.meta["skipped"]))
