"""Training batches with Grain, from the sources of data/sources.py: bucketed random crops of
clips, degraded on the fly (or precomputed latents), one shard per host, worker processes,
resumable, delivered as global jax.Arrays. `degrade_on="device"`: the workers only draw the
degradation and this process applies it on its devices (data/degrade_jax.py) before delivery.

Step s of every host uses bucket `schedule.bucket(s)` (frames, height, width; data/bucketing.py),
a function of (seed, s) alone, so all hosts agree on the shapes of every step without talking.
Each host draws its `batch_size / process_count` examples from the clips of its own shard that
fit the bucket: per (source, bucket), an endless stream of per-epoch shuffles; sources mixed by
weight (`grain.MapDataset.mix`). Example `slot` of step s is crop + degradation drawn from
rng(seed, host, s, slot), so a batch depends only on (seed, host, step): the iterator state is
{"step": s}, identical on all hosts (the trainer saves it once, with Orbax JsonSave) and valid
for any number of workers.

`resize=False` (the paper: "cropping beat resizing"): a clip serves every bucket it fits, with
random crops at native resolution. `resize=True`: a clip serves only the fitting bucket of the
nearest aspect ratio, downscaled (area) until the bucket just covers it, then cropped.

Batch (host-local numpy, or global arrays with a mesh):
  hq     (B, t, h, w, 3) uint8
  lq     (B, t, h / scale, w / scale, 3) uint8: LQ at its own size. The model conditions on the
         LQ resized to the HQ size (train/latents.py resizes on device), so the host ships 1/16
         of the pixels; uint8 keeps host memory and transfers 4x smaller than f32.
  bucket (B,) int32
Precomputed latents (`data.latents`, a `precompute-latents` directory) give `hq_moments` /
`lq_moments` (B, t', h/8, w/8, 2C) posterior mean | logvar instead of pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import grain
import jax
import ml_collections
import numpy as np

from seedvr2_jax.data import bucketing, degrade_jax, degradations, resize, sources
from seedvr2_jax.errors import ConfigError, InputError
from seedvr2_jax.parallel.mesh import BATCH_AXES

log = logging.getLogger("seedvr2_jax.data")

MAX_ATTEMPTS = 8  # clips tried for one example before a decoding error stops the run


def default_config() -> ml_collections.ConfigDict:
  """Data fields of the training config (`config.data`); locked, so a mistyped key fails."""
  cfg = ml_collections.ConfigDict(dict(
      sources="",  # DIR or tfds:NAME[:SPLIT], each optionally *WEIGHT, comma-separated
      tfds_data_dir="",  # data_dir of the tfds sources ("" = tfds default)
      latents="",  # a `precompute-latents` directory: read it instead of sources
      buckets=((21, 720, 1280), (21, 720, 720)),  # (frames, height, width); frames = 4n + 1
      bucket_weights=(),  # chance of each bucket per step; () = equal
      # Progressive growth: ((STEP, (w, ...)), ...) replaces the weights from STEP on, e.g.
      # images, then 5-frame, then 21-frame clips as the paper's APT stage.
      bucket_stages=(),
      frame_stride=1,  # take every k-th frame
      resize=False,  # False: crop at native size; True: downscale to the nearest-aspect bucket
      degradation=degradations.DEFAULT_PRESET,  # preset of data/degradations.py
      # "host": the whole degradation in numpy where examples are made (workers). "device":
      # workers draw its parameters; blur, resize, noise and JPEG run on this process's devices
      # (data/degrade_jax.py), the video codec round trip back on the host.
      degrade_on="host",
      scale=4,  # HQ / LQ size
      # True: each host indexes and reads only its shard of the sources (I/O spread over hosts;
      # a batch depends on the host count). False: every host indexes every source and a batch
      # is a function of (seed, step) alone, whatever the number of hosts.
      shard_sources=True,
      workers=0,  # worker processes per host (0: decode and degrade in this process)
      threads=1,  # threads per process mapping examples
      prefetch=2,  # examples buffered per worker (or in-process)
  ))
  cfg.lock()
  return cfg


def _seed(*parts: int) -> int:
  return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def bucket_streams(members: Sequence[Sequence[list]], weights: Sequence[float], seed: int,
                   used: np.ndarray, describe: Callable[[int], str]) -> list:
  """members[k][b] = source k's items in bucket b -> per bucket, an endless MapDataset: each
  source's items reshuffled every epoch, sources mixed by `weights` (None for buckets never
  `used`; InputError(describe(b)) for a used bucket without items)."""
  streams = []
  for b in range(len(members[0])):
    if not used[b]:
      streams.append(None)
      continue
    pools, pool_weights = [], []
    for k, (per_bucket, weight) in enumerate(zip(members, weights)):
      if per_bucket[b]:
        pools.append(grain.MapDataset.source(per_bucket[b]).shuffle(seed=_seed(seed, k, b))
                     .repeat())
        pool_weights.append(weight)
    if not pools:
      raise InputError(describe(b))
    streams.append(pools[0] if len(pools) == 1 else grain.MapDataset.mix(pools, pool_weights))
  return streams


class PixelExample:
  """(clip, (t, h, w) bucket, rng) -> {"hq", "lq"}: temporal + spatial crop (after the `resize`
  downscale), then the degradation, all drawn from rng. `on_device`: {"hq", "plan", "video"},
  the degradation drawn for `degrade_jax.Degrader` to apply."""

  def __init__(self, stride: int, resize_to_bucket: bool,
               degradation: ml_collections.ConfigDict, on_device: bool = False):
    self.stride, self.resize, self.degradation = stride, resize_to_bucket, degradation
    self.on_device = on_device

  def __call__(self, clip: sources.Clip, bucket_thw: tuple[int, int, int],
               rng: np.random.Generator) -> dict:
    t, h, w = bucket_thw
    span = (t - 1) * self.stride + 1
    start = int(rng.integers(clip.frames - span + 1))
    frames = clip.read(start, span)[::self.stride]
    if self.resize:
      s = max(h / clip.height, w / clip.width)
      size = (max(h, round(clip.height * s)), max(w, round(clip.width * s)))
      if size != frames.shape[1:3]:  # frame by frame: one float frame in memory at a time
        frames = np.stack([resize.resize(f.transpose(2, 0, 1).astype(np.float32), size, "area")
                           .round().clip(0, 255).astype(np.uint8).transpose(1, 2, 0)
                           for f in frames])
    top = int(rng.integers(frames.shape[1] - h + 1))
    left = int(rng.integers(frames.shape[2] - w + 1))
    hq = np.ascontiguousarray(frames[:, top:top + h, left:left + w])
    if self.on_device:
      return {"hq": hq, **degrade_jax.draw(self.degradation, rng, hq)}
    return {"hq": hq, "lq": degradations.degrade_clip(hq, self.degradation, rng)}


def latent_example(record: sources.LatentRecord, _bucket_thw, _rng) -> dict:
  """(record, bucket, rng) -> {"hq_moments", "lq_moments"}: the stored posterior moments. The
  bucket is the record's and nothing is drawn (train/latents.py samples on device)."""
  stored = record.read()
  return {"hq_moments": stored["hq_moments"], "lq_moments": stored["lq_moments"]}


class Examples:
  """Host example index k -> example dict: step k // B_host, global slot g = host * B_host +
  k % B_host of the global batch, made by `make(item, buckets[b], rng)` from item
  occurrence(step) * B + g of bucket b's stream with rng(seed, step, g): a pure function of
  (seed, step, g) and the stream (this host's shard of the sources, or all of them). An item
  that fails to decode is replaced by a draw from the same bucket (up to MAX_ATTEMPTS) and not
  tried again by this process (`bad_keys`: each worker process has its own); `skipped` counts
  the failures."""

  def __init__(self, streams: list[grain.MapDataset], schedule: bucketing.BucketSchedule,
               buckets: Sequence[tuple[int, int, int]], host_batch: int, seed: int,
               process_index: int, process_count: int, make: Callable[..., dict]):
    self.streams, self.schedule, self.buckets = streams, schedule, buckets
    self.host_batch, self.seed, self.make = host_batch, seed, make
    self.process_index, self.process_count = process_index, process_count
    self.bad_keys: set[str] = set()

  def __call__(self, k: int) -> dict:
    step, slot = divmod(int(k), self.host_batch)
    slot += self.process_index * self.host_batch
    bucket = self.schedule.bucket(step)
    stream = self.streams[bucket]
    position = self.schedule.occurrence(step) * self.host_batch * self.process_count + slot
    ids = (self.seed, step, slot)
    error = None
    for attempt in range(MAX_ATTEMPTS):
      if attempt:
        position = int(np.random.default_rng([*ids, attempt, 1]).integers(len(stream)))
      item = stream[position]
      if item.key in self.bad_keys:
        continue
      try:
        out = self.make(item, self.buckets[bucket], np.random.default_rng([*ids, attempt]))
      except InputError as e:
        self.bad_keys.add(item.key)
        log.warning("skipping a clip that cannot be decoded: %s", e)
        error = e
        continue
      return {**out, "bucket": np.int32(bucket), "skipped": np.int32(attempt)}
    raise InputError(f"{MAX_ATTEMPTS} clips in a row could not be decoded (last: {error})")


def global_batch(host_batch: dict, mesh: jax.sharding.Mesh) -> dict:
  """Host-local numpy batch (this host's rows) -> global jax.Arrays, the leading axis split
  over the mesh's batch axes ("data", "fsdp"; those the mesh has)."""
  axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
  out = {}
  for name, value in host_batch.items():
    value = np.asarray(value)
    spec = jax.sharding.PartitionSpec(axes, *([None] * (value.ndim - 1)))
    out[name] = jax.make_array_from_process_local_data(
        jax.sharding.NamedSharding(mesh, spec), value)
  return out


class Batches:
  """Iterator of batches: `next()` -> dict (host numpy, or global arrays with a mesh);
  `get_state()` -> {"step": s}; `set_state(state)` resumes at that step. `finish`, if given,
  completes each host batch (the device degradation) before it is delivered."""

  def __init__(self, examples: Examples, cfg: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh | None, skipped_at_index: int,
               finish: Callable[[dict], dict] | None = None):
    self.examples, self.cfg, self.mesh, self.finish = examples, cfg, mesh, finish
    self.step, self.decode_failures, self.skipped_at_index = 0, 0, skipped_at_index
    self._it = None

  def bucket(self, step: int) -> tuple[int, int, int]:
    """(frames, height, width) of step `step` (the same on every host)."""
    return self.examples.buckets[self.examples.schedule.bucket(step)]

  def _start(self):
    b = self.examples.host_batch
    ds = grain.MapDataset.range(self.step * b, 2 ** 62).map(self.examples)
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=self.cfg.threads,
                                              prefetch_buffer_size=self.cfg.prefetch))
    if self.cfg.workers:
      from absl import flags
      if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=self.cfg.workers, per_worker_buffer_size=self.cfg.prefetch))
    return iter(ds.batch(b, drop_remainder=True))

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._it is None:
      self._it = self._start()
    batch = next(self._it)
    self.step += 1
    self.decode_failures += int(batch.pop("skipped").sum())
    if self.finish is not None:
      batch = self.finish(batch)
    return batch if self.mesh is None else global_batch(batch, self.mesh)

  def get_state(self) -> dict:
    return {"step": self.step}

  def set_state(self, state: dict) -> None:
    self.close()
    self.step = int(state["step"])

  def metrics(self) -> dict:
    """Files skipped at start-up (unreadable) and clips replaced after failing to decode."""
    return {"data/skipped_files": self.skipped_at_index,
            "data/decode_failures": self.decode_failures}

  def close(self) -> None:
    if self._it is not None:
      self._it.close()
      self._it = None


def _host(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None:
    return jax.process_index(), jax.process_count()
  return process_index, process_count


def make_batches(cfg: ml_collections.ConfigDict, *, batch_size: int, seed: int,
                 mesh: jax.sharding.Mesh | None = None, process_index: int | None = None,
                 process_count: int | None = None) -> Batches:
  """The batch iterator of config `cfg` (`default_config()` fields). batch_size is global
  (split evenly over hosts); process_index / process_count default to JAX's."""
  pi, pc = _host(process_index, process_count)
  if batch_size % pc:
    raise ConfigError(f"batch size {batch_size} does not split over {pc} hosts")
  # The sources' shard of this host: its own, or all of them (`shard_sources`).
  shard = dict(process_index=pi, process_count=pc) if cfg.shard_sources else dict(
      process_index=0, process_count=1)
  if cfg.latents:
    return _latent_batches(cfg, batch_size=batch_size // pc, seed=seed, mesh=mesh,
                           process_index=pi, process_count=pc, shard=shard)
  stride = int(cfg.frame_stride)
  if stride < 1:
    raise ConfigError(f"data.frame_stride={stride} must be >= 1")
  buckets = bucketing.check_buckets(cfg.buckets, cfg.scale)
  if cfg.degrade_on not in ("host", "device"):
    raise ConfigError(f"data.degrade_on={cfg.degrade_on!r}: choose 'host' or 'device'")
  on_device = cfg.degrade_on == "device"
  degradation = degradations.override(degradations.preset(cfg.degradation),
                                      {"scale": int(cfg.scale)})
  opened = sources.open_sources(cfg.sources, tfds_data_dir=cfg.tfds_data_dir or None, **shard)
  members = []
  for source, _ in opened:
    per_bucket = [[] for _ in buckets]
    for i in range(len(source)):
      clip = source[i]
      if cfg.resize:
        b = bucketing.nearest_aspect(clip, buckets, stride)
        if b is not None:
          per_bucket[b].append(clip)
      else:
        for b, bucket in enumerate(buckets):
          if bucketing.fits(clip, bucket, stride):
            per_bucket[b].append(clip)
    members.append(per_bucket)

  def describe(b: int) -> str:
    clips = [source[i] for source, _ in opened for i in range(len(source))]
    t, h, w = buckets[b]
    name = f"bucket {t}x{h}x{w} (frames x height x width, frame stride {stride})"
    if any(bucketing.fits(c, buckets[b], stride) for c in clips):
      return (f"{name} is no clip's nearest aspect ratio on host {pi} (data.resize=True): "
              f"drop it or add data of that shape")
    return (f"{name} is larger than every clip of host {pi}'s data (longest "
            f"{max(c.frames for c in clips)} frames, largest {max(c.height for c in clips)}x"
            f"{max(c.width for c in clips)} px): use a smaller bucket or other data")

  stages = bucketing.bucket_stages(cfg, len(buckets))
  used = np.any([weights > 0 for _, weights in stages], axis=0)
  streams = bucket_streams(members, [w for _, w in opened], seed, used, describe)
  schedule = bucketing.BucketSchedule(stages, seed)
  examples = Examples(streams, schedule, buckets, batch_size // pc, seed, pi, pc,
                      PixelExample(stride, bool(cfg.resize), degradation, on_device))
  skipped = sum(len(source.skipped) for source, _ in opened)
  return Batches(examples, cfg, mesh, skipped,
                 degrade_jax.Degrader(degradation) if on_device else None)


def _latent_batches(cfg: ml_collections.ConfigDict, *, batch_size: int, seed: int, mesh,
                    process_index: int, process_count: int, shard: dict) -> Batches:
  """Batches of precomputed moments (`cfg.latents`), bucketed as the pixel pipeline over the
  buckets of the latents, each drawn in proportion to its records (the same on every host).
  batch_size is per host; `shard`: the records this host indexes."""
  source = sources.LatentSource(cfg.latents, **shard)
  buckets = tuple(tuple(b) for b in source.meta["buckets"])
  counts = np.bincount([b for s in source.meta["shards"] for b in s["buckets"]],
                       minlength=len(buckets))
  members = [[[source[i] for i in range(len(source)) if source.buckets[i] == b]
              for b in range(len(buckets))]]

  def describe(b: int) -> str:
    return (f"{cfg.latents}: no record of bucket {'x'.join(map(str, buckets[b]))} for host "
            f"{process_index} of {process_count}")

  streams = bucket_streams(members, [1.0], seed, counts > 0, describe)
  schedule = bucketing.BucketSchedule([(0, counts / counts.sum())], seed)
  examples = Examples(streams, schedule, buckets, batch_size, seed, process_index,
                      process_count, latent_example)
  return Batches(examples, cfg, mesh, int(source.meta["skipped"]))
