"""The toy runs' training examples: a fixed pool of random crops of the training frames, each
degraded once with the project's degradations, then sampled by every stage.

A pool of a few thousand crops is drawn once (worker processes) instead of the Grain pipeline's
endless stream: the toy model trains for thousands of steps of small batches, faster than a
host can degrade fresh clips, and every stage then sees the same examples. After the VAE stage
the pool is encoded once (posterior moments), so the DiT stages read latents, as
`precompute-latents` runs do.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os

import jax
import numpy as np

from seedvr2_jax.data import bucketing, degradations, video_io
from seedvr2_jax.diffusion import condition
from seedvr2_jax.models.vae import codec
from seedvr2_jax.parallel.mesh import BATCH_AXES


def read_video(path: str, start: int = 0, stop: int | None = None) -> np.ndarray:
  """Frames [start, stop) of a video file, (T, H, W, 3) uint8."""
  frames = list(video_io.read_frames(video_io.probe(path)))
  return np.stack(frames[start:stop])


def _crop(videos: list[np.ndarray], bucket, rng: np.random.Generator) -> np.ndarray:
  """A random (t, h, w) crop of a random video, flipped horizontally half the time."""
  video = videos[int(rng.integers(len(videos)))]
  t, h, w = bucket
  start = int(rng.integers(video.shape[0] - t + 1))
  top, left = int(rng.integers(video.shape[1] - h + 1)), int(rng.integers(video.shape[2] - w + 1))
  hq = video[start:start + t, top:top + h, left:left + w]
  return np.ascontiguousarray(hq[:, :, ::-1] if rng.random() < 0.5 else hq)


def _degrade(args) -> np.ndarray:
  hq, degradation, seed = args
  return degradations.degrade_clip(hq, degradation, seed)


def build(videos: list[np.ndarray], count: int, bucket: tuple[int, int, int], degradation,
          seed: int, workers: int) -> dict:
  """{"hq": (N, t, h, w, 3), "lq": (N, t, h/scale, w/scale, 3)} uint8; example i depends only
  on (seed, i). Crops are cut here; worker processes (spawned: forking a process that runs
  JAX and FFmpeg threads can deadlock) degrade them."""
  hq = np.stack([_crop(videos, bucket, np.random.default_rng((seed, i))) for i in range(count)])
  jobs = [(clip, degradation, (seed, i, 1)) for i, clip in enumerate(hq)]
  if workers > 1:
    previous = os.environ.get("JAX_PLATFORMS")
    os.environ["JAX_PLATFORMS"] = "cpu"  # spawned workers re-import the script: keep off the GPU
    try:
      with concurrent.futures.ProcessPoolExecutor(
          workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        lq = list(ex.map(_degrade, jobs, chunksize=16))
    finally:
      if previous is None:
        del os.environ["JAX_PLATFORMS"]
      else:
        os.environ["JAX_PLATFORMS"] = previous
  else:
    lq = [_degrade(job) for job in jobs]
  return {"hq": hq, "lq": np.stack(lq)}


def encode(vae, pool: dict, batch: int = 64) -> dict:
  """Posterior moments of the pool's HQ clips and of its LQ clips resized to the HQ size (as the
  trainer's pixel path does): {"hq_moments", "lq_moments"} (N, t', h', w', 2C) float32."""
  @jax.jit
  def moments(hq, lq):
    hq = condition.to_unit(hq)
    lq = condition.lq_pixels_at(condition.to_unit(lq), hq.shape)
    return codec.encode(vae, hq), codec.encode(vae, lq)

  out = {"hq_moments": [], "lq_moments": []}
  n = len(pool["hq"])
  for i in range(0, n, batch):
    j = min(i + batch, n)
    pad = batch - (j - i)  # one shape, one compilation
    take = lambda x: np.concatenate([x[i:j], np.repeat(x[j - 1:j], pad, 0)])
    hq_m, lq_m = moments(take(pool["hq"]), take(pool["lq"]))
    out["hq_moments"].append(np.asarray(hq_m)[:j - i])
    out["lq_moments"].append(np.asarray(lq_m)[:j - i])
  return {k: np.concatenate(v) for k, v in out.items()}


class PoolBatches:
  """The trainer's batch iterator over a pool kept on the devices (replicated; a step gathers
  its rows there, so no batch crosses the host): step s draws `batch_size` examples from
  rng(seed, s); `frames(s)` (from the config's bucket schedule) keeps the first frames of each
  (1 = images: a causal VAE's first latent frame depends on the first frame alone). Batches
  are split over the mesh's batch axes, or on the default device without a mesh."""

  def __init__(self, arrays: dict, batch_size: int, seed: int, mesh=None, frames=None):
    self.batch_size, self.seed, self.frames = batch_size, seed, frames
    self.count = len(next(iter(arrays.values())))
    self.step = 0
    if mesh is None:
      self.arrays = {k: jax.device_put(v) for k, v in arrays.items()}
      out = None
    else:
      replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
      self.arrays = {k: jax.device_put(v, replicated) for k, v in arrays.items()}
      axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
      out = {k: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axes))
             for k in arrays}
    self._gather = jax.jit(lambda arrays, idx, t: {k: v[idx, :t] for k, v in arrays.items()},
                           static_argnums=2, out_shardings=out)

  @classmethod
  def from_config(cls, arrays: dict, config, mesh=None, temporal_factor: int = 4):
    """Frames per step from `config.data` buckets and bucket_stages (latent frames when the
    arrays are moments)."""
    buckets = tuple(tuple(b) for b in config.data.buckets)
    schedule = bucketing.BucketSchedule(bucketing.bucket_stages(config.data, len(buckets)),
                                        config.seed)
    latent = "hq_moments" in arrays
    count = lambda t: (t - 1) // temporal_factor + 1 if latent else t
    return cls(arrays, config.batch_size, config.seed, mesh,
               lambda s: count(buckets[schedule.bucket(s)][0]))

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    rng = np.random.default_rng((self.seed, self.step))
    idx = np.sort(rng.choice(self.count, self.batch_size, replace=self.count < self.batch_size))
    t = None if self.frames is None else self.frames(self.step)
    self.step += 1
    return self._gather(self.arrays, idx, t)

  def get_state(self) -> dict:
    return {"step": self.step}

  def set_state(self, state: dict) -> None:
    self.step = int(state["step"])

  def metrics(self) -> dict:
    return {}

  def close(self) -> None:
    pass
