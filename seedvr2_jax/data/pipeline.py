"""Training batches with Grain: bucketed random crops of clips, degraded on the fly, one shard
per host, worker processes, resumable, delivered as global jax.Arrays.

Step s of every host uses bucket `schedule.bucket(s)` (frames, height, width), a function of
(seed, s) alone, so all hosts agree on the shapes of every step without talking. Each host
draws its `batch_size / process_count` examples from the clips of its own shard that fit the
bucket: per (source, bucket), an endless stream of per-epoch shuffles; sources mixed by weight
(`grain.MapDataset.mix`). Example `slot` of step s is crop + degradation drawn from
rng(seed, host, s, slot), so a batch depends only on (seed, host, step): the iterator state is
{"step": s}, identical on all hosts (the trainer saves it once, with Orbax JsonSave) and valid
for any number of workers.

A clip fits bucket (t, h, w) when it has (t - 1) * frame_stride + 1 frames and at least h x w
pixels. `resize=False` (the paper: "cropping beat resizing"): a clip serves every bucket it fits,
with random crops at native resolution. `resize=True`: a clip serves only the fitting bucket of
the nearest aspect ratio, downscaled (area) until the bucket just covers it, then cropped.

Batch (host-local numpy, or global arrays with a mesh):
  hq     (B, t, h, w, 3) uint8
  lq     (B, t, h / scale, w / scale, 3) uint8: LQ at its own size. The model conditions on the
         LQ resized to the HQ size (spec 4.3; train/latents.py resizes on device), so the host
         ships 1/16 of the pixels; uint8 keeps host memory and transfers 4x smaller than f32.
  bucket (B,) int32
Precomputed latents (`data.latents`, precompute.py) give `hq_moments` / `lq_moments` (B, t', h/8,
w/8, 2C) posterior mean | logvar instead of pixels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import grain
import jax
import ml_collections
import numpy as np

from seedvr2_jax.data import degradations, resize, sources
from seedvr2_jax.errors import ConfigError, InputError
from seedvr2_jax.parallel.mesh import BATCH_AXES

log = logging.getLogger("seedvr2_jax.data")

SIZE_MULTIPLE = 16  # VAE 8 x DiT patch 2
MAX_ATTEMPTS = 8  # clips tried for one example before a decoding error stops the run
_SCHEDULE_CHUNK = 4096
_BAD_KEYS: set[str] = set()  # clips that failed to decode in this process


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
      scale=4,  # HQ / LQ size
      workers=0,  # worker processes per host (0: decode and degrade in this process)
      threads=1,  # threads per process mapping examples
      prefetch=2,  # examples buffered per worker (or in-process)
  ))
  cfg.lock()
  return cfg


def _bucket(value) -> tuple[int, int, int]:
  try:
    t, h, w = (int(v) for v in value)
  except (TypeError, ValueError):
    raise ConfigError(f"bucket {value!r} must be 3 integers (frames, height, width)") from None
  return t, h, w


def check_buckets(buckets: Sequence, scale: int) -> tuple[tuple[int, int, int], ...]:
  """(frames, height, width) buckets, validated: frames 4n + 1, sizes multiples of 16 and of
  `scale`."""
  out = tuple(_bucket(b) for b in buckets)
  if not out:
    raise ConfigError("data.buckets is empty")
  for t, h, w in out:
    if t < 1 or t % 4 != 1:
      raise ConfigError(f"bucket {t}x{h}x{w}: frames must be 4n+1 (1, 5, 9, ...)")
    if h <= 0 or w <= 0 or h % SIZE_MULTIPLE or w % SIZE_MULTIPLE or h % scale or w % scale:
      raise ConfigError(f"bucket {t}x{h}x{w}: height and width must be positive multiples of "
                        f"{SIZE_MULTIPLE} and of the scale {scale}")
  return out


def normalized_weights(values: Sequence[float], n: int, what: str) -> np.ndarray:
  """`values` (or n equal weights when empty) scaled to sum to 1; ConfigError if unusable."""
  w = np.ones(n) if not len(values) else np.asarray(values, np.float64)
  if w.shape != (n,) or not (w >= 0).all() or not w.sum() > 0:
    raise ConfigError(f"{what} {tuple(values)}: need {n} non-negative weights, not all zero")
  return w / w.sum()


def _seed(*parts: int) -> int:
  return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class BucketSchedule:
  """bucket(step): drawn from rng(seed, step // 4096) with the weights of the stage holding
  `step` (`stages`: (first step, weights), the first at step 0); occurrence(step): how many
  earlier steps drew the same bucket. Same values on every host."""

  def __init__(self, stages: Sequence[tuple[int, np.ndarray]], seed: int):
    self.starts = np.asarray([start for start, _ in stages])
    cdfs = np.stack([np.cumsum(w) for _, w in stages])
    self.cdfs = cdfs / cdfs[:, -1:]
    self.seed, self.buckets = seed, self.cdfs.shape[1]
    self._counts = [np.zeros(self.buckets, np.int64)]  # per chunk: draws before it

  def _chunk(self, c: int) -> np.ndarray:
    # As Generator.choice(p=w) draws: uniforms looked up in the cumulative weights.
    uniform = np.random.default_rng([self.seed, 0x5EED, c]).random(_SCHEDULE_CHUNK)
    steps = c * _SCHEDULE_CHUNK + np.arange(_SCHEDULE_CHUNK)
    cdf = self.cdfs[np.searchsorted(self.starts, steps, side="right") - 1]
    return (uniform[:, None] >= cdf).sum(axis=1)

  def bucket(self, step: int) -> int:
    return int(self._chunk(step // _SCHEDULE_CHUNK)[step % _SCHEDULE_CHUNK])

  def occurrence(self, step: int) -> int:
    c, i = divmod(step, _SCHEDULE_CHUNK)
    counts = self._counts
    if len(counts) <= c:  # extend a copy: threads may call this concurrently
      counts = list(counts)
      while len(counts) <= c:
        draws = self._chunk(len(counts) - 1)
        counts.append(counts[-1] + np.bincount(draws, minlength=self.buckets))
      self._counts = counts
    chunk = self._chunk(c)
    b = chunk[i]
    return int(counts[c][b] + np.count_nonzero(chunk[:i] == b))


def bucket_stages(cfg: ml_collections.ConfigDict, n: int) -> list[tuple[int, np.ndarray]]:
  """[(first step, normalised weights)] from data.bucket_weights and data.bucket_stages."""
  stages = [(0, normalized_weights(cfg.bucket_weights, n, "data.bucket_weights"))]
  for stage in cfg.bucket_stages:
    try:
      start, weights = int(stage[0]), stage[1]
    except (TypeError, ValueError, IndexError):
      raise ConfigError(f"data.bucket_stages entry {stage!r}: expected (step, weights)") from None
    if start <= stages[-1][0]:
      raise ConfigError(f"data.bucket_stages: steps must increase from 1, got {start} after "
                        f"{stages[-1][0]}")
    stages.append((start, normalized_weights(weights, n, f"data.bucket_stages at {start}")))
  return stages


def fits(clip, bucket: tuple[int, int, int], stride: int) -> bool:
  t, h, w = bucket
  return clip.frames >= (t - 1) * stride + 1 and clip.height >= h and clip.width >= w


def nearest_aspect(clip, buckets, stride: int) -> int | None:
  """The fitting bucket whose aspect ratio is nearest the clip's (ties: larger area, then more
  frames, then the first); None if none fits."""
  fitting = [i for i, b in enumerate(buckets) if fits(clip, b, stride)]
  if not fitting:
    return None
  aspect = math.log(clip.width / clip.height)
  return min(fitting, key=lambda i: (abs(aspect - math.log(buckets[i][2] / buckets[i][1])),
                                     -buckets[i][1] * buckets[i][2], -buckets[i][0], i))


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
  """(clip, bucket, rng) -> {"hq", "lq"}: temporal + spatial crop (after the `resize` downscale),
  then the degradation."""

  def __init__(self, buckets, stride: int, resize_to_bucket: bool,
               degradation: ml_collections.ConfigDict):
    self.buckets, self.stride, self.resize = buckets, stride, resize_to_bucket
    self.degradation = degradation

  def __call__(self, clip: sources.Clip, bucket: int, rng: np.random.Generator) -> dict:
    t, h, w = self.buckets[bucket]
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
    return {"hq": hq, "lq": degradations.degrade_clip(hq, self.degradation, rng)}


class Examples:
  """Host example index k -> example dict, a pure function of (seed, host, k): step k // B,
  slot k % B. A clip that fails to decode is replaced by a draw from the same bucket (up to
  MAX_ATTEMPTS); `skipped` counts the failures."""

  def __init__(self, streams: list[grain.MapDataset], schedule: BucketSchedule, host_batch: int,
               seed: int, process_index: int, make: Callable):
    self.streams, self.schedule, self.host_batch = streams, schedule, host_batch
    self.seed, self.process_index, self.make = seed, process_index, make

  def __call__(self, k: int) -> dict:
    step, slot = divmod(int(k), self.host_batch)
    bucket = self.schedule.bucket(step)
    stream = self.streams[bucket]
    position = self.schedule.occurrence(step) * self.host_batch + slot
    ids = (self.seed, self.process_index, step, slot)
    error = None
    for attempt in range(MAX_ATTEMPTS):
      if attempt:
        position = int(np.random.default_rng([*ids, attempt, 1]).integers(len(stream)))
      item = stream[position]
      if item.key in _BAD_KEYS:
        continue
      try:
        out = self.make(item, bucket, np.random.default_rng([*ids, attempt]))
      except InputError as e:
        _BAD_KEYS.add(item.key)
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
  `get_state()` -> {"step": s}; `set_state(state)` resumes at that step."""

  def __init__(self, examples: Examples, cfg: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh | None, skipped_at_index: int):
    self.examples, self.cfg, self.mesh = examples, cfg, mesh
    self.step, self.decode_failures, self.skipped_at_index = 0, 0, skipped_at_index
    self._it = None

  def bucket(self, step: int) -> tuple[int, int, int]:
    """(frames, height, width) of step `step` (the same on every host)."""
    return self.examples.make.buckets[self.examples.schedule.bucket(step)]

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
  if cfg.latents:
    from seedvr2_jax.data import precompute
    return precompute.latent_batches(cfg, batch_size=batch_size // pc, seed=seed, mesh=mesh,
                                     process_index=pi, process_count=pc)
  stride = int(cfg.frame_stride)
  if stride < 1:
    raise ConfigError(f"data.frame_stride={stride} must be >= 1")
  buckets = check_buckets(cfg.buckets, cfg.scale)
  degradation = degradations.override(degradations.preset(cfg.degradation),
                                      {"scale": int(cfg.scale)})
  opened = sources.open_sources(cfg.sources, tfds_data_dir=cfg.tfds_data_dir or None,
                                process_index=pi, process_count=pc)
  members = []
  for source, _ in opened:
    per_bucket = [[] for _ in buckets]
    for i in range(len(source)):
      clip = source[i]
      if cfg.resize:
        b = nearest_aspect(clip, buckets, stride)
        if b is not None:
          per_bucket[b].append(clip)
      else:
        for b, bucket in enumerate(buckets):
          if fits(clip, bucket, stride):
            per_bucket[b].append(clip)
    members.append(per_bucket)

  def describe(b: int) -> str:
    clips = [source[i] for source, _ in opened for i in range(len(source))]
    t, h, w = buckets[b]
    name = f"bucket {t}x{h}x{w} (frames x height x width, frame stride {stride})"
    if any(fits(c, buckets[b], stride) for c in clips):
      return (f"{name} is no clip's nearest aspect ratio on host {pi} (data.resize=True): "
              f"drop it or add data of that shape")
    return (f"{name} is larger than every clip of host {pi}'s data (longest "
            f"{max(c.frames for c in clips)} frames, largest {max(c.height for c in clips)}x"
            f"{max(c.width for c in clips)} px): use a smaller bucket or other data")

  stages = bucket_stages(cfg, len(buckets))
  used = np.any([weights > 0 for _, weights in stages], axis=0)
  streams = bucket_streams(members, [w for _, w in opened], seed, used, describe)
  schedule = BucketSchedule(stages, seed)
  examples = Examples(streams, schedule, batch_size // pc, seed, pi,
                      PixelExample(buckets, stride, bool(cfg.resize), degradation))
  skipped = sum(len(source.skipped) for source, _ in opened)
  return Batches(examples, cfg, mesh, skipped)
