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
train/latents.py samples them). The output directory (its layout: data/sources.py, which reads
it) is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time

import jax
import ml_collections
import numpy as np
from flax import nnx

from seedvr2_jax.data import batching, bucketing, degradations, sources
from seedvr2_jax.diffusion import condition
from seedvr2_jax.errors import InputError
from seedvr2_jax.models.vae import codec
from seedvr2_jax.models.vae.autoencoder import VideoAutoencoder
from seedvr2_jax.utils import atomic


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


@dataclasses.dataclass
class _Writer:
  """Round-robin records over `shards` array_record files; remembers each record's bucket."""

  folder: str
  shards: int

  def __post_init__(self):
    from array_record.python import array_record_module
    self.files = [array_record_module.ArrayRecordWriter(
        os.path.join(self.folder, sources.latents_shard_name(s, self.shards)), "group_size:1")
        for s in range(self.shards)]
    self.buckets: list[list[int]] = [[] for _ in range(self.shards)]
    self.count = 0

  def write(self, record: bytes, bucket: int) -> None:
    shard = self.count % self.shards
    self.files[shard].write(record)
    self.buckets[shard].append(bucket)
    self.count += 1

  def close(self) -> None:
    for f in self.files:
      f.close()


def plan(opened, buckets, stride: int, resize_to_bucket: bool):
  """([(source number, clip number, clip, bucket)], keys of clips smaller than every bucket)."""
  choose = bucketing.nearest_aspect if resize_to_bucket else bucketing.largest_fitting
  todo, too_small = [], []
  for k, (source, _) in enumerate(opened):
    for i in range(len(source)):
      b = choose(source[i], buckets, stride)
      if b is None:
        too_small.append(source[i].key)
      else:
        todo.append((k, i, source[i], b))
  return todo, too_small


def encode_all(todo, buckets, make: batching.PixelExample, encode, writer: _Writer, *,
               devices: int, seed: int, dtype: str, log) -> list[str]:
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
      writer.write(sources.latent_record(hq_m[i], lq_m[i], b, key), b)
    log(f"precompute: {writer.count} clips encoded ({time.perf_counter() - start:.1f} s)")

  for k, i, clip, b in todo:
    try:
      example = make(clip, buckets[b], np.random.default_rng([seed, k, i]))
    except InputError as e:
      failed.append(str(e))
      continue
    pending.setdefault(b, []).append((clip.key, example))
    if len(pending[b]) == devices:
      flush(b)
  for b in list(pending):
    flush(b)
  return failed


def write_latents(data: str, out: str, *, checkpoint: str | None = None, shards: int = 1,
                  config: ml_collections.ConfigDict | None = None, seed: int = 0,
                  dtype: str = "float32", encode_chunk: int | None = 4, overwrite: bool = False,
                  log=print) -> dict:
  """Encodes every clip of sources spec `data` into the latents directory `out` (see the module
  doc). `config`: the pipeline's data config (buckets, frame_stride, resize, degradation, scale,
  tfds_data_dir); default `batching.default_config()`. Returns the meta dict."""
  out = os.path.abspath(out)
  if os.path.exists(out) and not overwrite:
    raise InputError(f"{out} exists (pass --overwrite to replace it)")
  if shards < 1:
    raise InputError(f"--shards {shards} must be >= 1")
  cfg = config or batching.default_config()
  buckets = bucketing.check_buckets(cfg.buckets, cfg.scale)
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
  make = batching.PixelExample(stride, bool(cfg.resize), degradation)

  with atomic.atomic_dir(out) as tmp:
    writer = _Writer(tmp, shards)
    failed = encode_all(todo, buckets, make, encode, writer, devices=len(devices), seed=seed,
                        dtype=dtype, log=log)
    writer.close()
    for what, keys in (("smaller than every bucket", too_small), ("that failed to decode",
                                                                   failed)):
      if keys:
        log(f"precompute: skipped {len(keys)} clip(s) {what}: {'; '.join(keys)}")
    skipped = sum(len(s.skipped) for s, _ in opened) + len(too_small) + len(failed)
    if not writer.count:
      raise InputError(f"{data}: no clip could be encoded ({skipped} skipped)")
    meta = {"format": sources.LATENTS_FORMAT, "version": sources.LATENTS_VERSION,
            "sources": data, "seed": seed, "buckets": [list(b) for b in buckets],
            "frame_stride": stride, "resize": bool(cfg.resize), "degradation": cfg.degradation,
            "scale": int(cfg.scale),
            "dtype": dtype, "vae": {"checkpoint": checkpoint or "tiny-random",
                                    "scaling_factor": vae.cfg.scaling_factor,
                                    "latent_channels": vae.cfg.latent_channels},
            "text": {"file": sources.LATENTS_TEXT, "source": checkpoint or "tiny-random"},
            "records": writer.count, "skipped": skipped,
            "shards": [{"file": sources.latents_shard_name(s, shards),
                        "buckets": writer.buckets[s]} for s in range(shards)]}
    np.savez(os.path.join(tmp, sources.LATENTS_TEXT), **text)
    with open(os.path.join(tmp, sources.LATENTS_META), "w") as f:
      json.dump(meta, f, indent=1)
  log(f"wrote {writer.count} clips to {out} ({shards} shard(s), {skipped} skipped)")
  return meta
