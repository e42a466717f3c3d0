"""Batch iterators for the trainer: `next()` -> dict of global jax.Arrays sharded over the
batch axes; `get_state()` / `set_state()` for checkpoints. Real data: `from_config` (the Grain
pipeline of data/batching.py); `SyntheticMoments` for benchmarks and tests."""

from __future__ import annotations

import jax
import numpy as np

from seedvr2_jax.data import batching


class SyntheticMoments:
  """Deterministic random posterior moments (B, T', h, w, 2C) standing in for precomputed
  latents (benchmarks, tests); batch i depends only on (seed, i), each process giving its rows
  of it."""

  def __init__(self, mesh, batch: int, latent_thw: tuple[int, int, int], channels: int = 16,
               seed: int = 0):
    self.mesh, self.batch, self.thw, self.channels, self.seed = (mesh, batch, latent_thw,
                                                                 channels, seed)
    self.index = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    rng = np.random.default_rng((self.seed, self.index))
    self.index += 1
    shape = (self.batch, *self.thw, 2 * self.channels)
    out = {}
    for name in ("hq_moments", "lq_moments"):
      moments = rng.standard_normal(shape, np.float32)
      moments[..., self.channels:] = -4.0  # small posterior variance
      rows = self.batch // jax.process_count()
      out[name] = moments[jax.process_index() * rows:(jax.process_index() + 1) * rows]
    return batching.global_batch(out, self.mesh)

  def get_state(self) -> dict:
    return {"index": self.index}

  def set_state(self, state: dict) -> None:
    self.index = int(state["index"])

  def metrics(self) -> dict:
    return {}

  def close(self) -> None:
    pass


def from_config(run) -> batching.Batches:
  """The run's Grain pipeline (`config.data`): global batches over the run's mesh."""
  config = run.config
  return batching.make_batches(config.data, batch_size=config.batch_size, seed=config.seed,
                               mesh=run.mesh)
