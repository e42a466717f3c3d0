"""Fitting a restore into a device-memory budget (`--memory-budget GB`).

A restore runs three stage programs (VAE encode, DiT, VAE decode). Each stage holds its weights
and its working memory (inputs, outputs, temporaries: XLA's memory analysis of the compiled
stage). Where the weights live decides the peak:

  offload "none":   all weights stay on the device: sum of weights + the largest working set;
  offload "stages": only the running stage's weights are on the device: max of weights + work;
  offload "blocks": as "stages", and the DiT's scanned blocks stream from host memory one at a
                    time, so the DiT stage holds only its other weights and about one block.

The planner walks from the fastest plan to the most frugal and takes the first that fits. What
costs least is given up first: weights move off the device before the VAE is tiled (a stage's
weights cross PCIe once per clip, overlapped with compute for streamed blocks), and tiles
shrink before clips shorten (tile overlaps recompute part of the VAE; clip overlaps recompute
part of every stage). Estimates come from a callback, memoised per stage and the options that
stage depends on, so a plan costs a few compilations, not one per combination.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from seedvr2_jax.errors import InputError
from seedvr2_jax.infer.options import RestoreOptions

STAGES = ("encode", "dit", "decode")
OFFLOADS = ("none", "stages", "blocks")
# VAE tiles tried (square, output pixels; None: untiled), largest first.
TILES = (None, 1024, 768, 512, 384, 256)
# Clip lengths tried (frames, 4n + 1 as the VAE wants), longest first; 21 is the paper's shortest.
CLIP_FRAMES = (121, 101, 81, 61, 45, 33, 21)
# The options each stage's program depends on (its estimate is memoised on them).
STAGE_FIELDS = {
    "encode": ("clip_frames", "encode_chunk", "tile", "tile_overlap"),
    "dit": ("clip_frames", "dit_weights", "offload"),
    "decode": ("clip_frames", "decode_chunk", "tile", "tile_overlap"),
}
GB = 1e9


@dataclasses.dataclass(frozen=True)
class StageMemory:
  """Device bytes of one stage: `weights` resident while it runs, `working` everything else at
  its peak (inputs, outputs, temporaries)."""

  weights: int
  working: int


def peak_bytes(stages: dict[str, StageMemory], offload: str) -> int:
  """The device peak of a restore whose stages need `stages`, with weights placed by `offload`."""
  if offload == "none":
    return sum(s.weights for s in stages.values()) + max(s.working for s in stages.values())
  return max(s.weights + s.working for s in stages.values())


def summary(options: RestoreOptions) -> str:
  """The options a plan chooses, in words."""
  tile = ("none" if options.tile is None
          else f"{options.tile[1]}x{options.tile[0]} (overlap {options.tile_overlap})")
  return (f"clips of {options.clip_frames or 'all'} frames, offload {options.offload}, VAE "
          f"tiles {tile}, DiT weights {options.dit_weights}")


@dataclasses.dataclass(frozen=True)
class Plan:
  """The options chosen, each stage's estimate and the peak they give."""

  options: RestoreOptions
  stages: dict[str, StageMemory]
  peak: int

  def describe(self, budget: int | None) -> list[str]:
    limit = "no budget" if budget is None else f"budget {budget / GB:.2f} GB"
    return [f"memory plan ({limit}): {summary(self.options)}; estimated peak "
            f"{self.peak / GB:.2f} GB",
            *(f"  {name}: weights {s.weights / GB:.2f} GB, working {s.working / GB:.2f} GB"
              for name, s in self.stages.items())]


Estimator = Callable[[str, RestoreOptions], StageMemory]


def memoised(estimate: Estimator) -> Estimator:
  """`estimate` called once per stage and value of the fields that stage depends on."""
  cache = {}

  def cached(stage: str, options: RestoreOptions) -> StageMemory:
    key = (stage, tuple(getattr(options, f) for f in STAGE_FIELDS[stage]))
    if key not in cache:
      cache[key] = estimate(stage, options)
    return cache[key]

  return cached


def _clip_ladder(options: RestoreOptions, frames: int) -> list[int | None]:
  """Clip lengths to try: the requested one (None: the whole video), then shorter ones."""
  longest = min(options.clip_frames or frames, frames)
  return [options.clip_frames, *(c for c in CLIP_FRAMES if c < longest)]


def _tile_ladder(options: RestoreOptions, size: tuple[int, int]) -> list[tuple[int, int] | None]:
  """VAE tiles to try: the requested one, then the smaller ones of TILES that tile `size`."""
  largest = min(options.tile) if options.tile is not None else max(size)
  smaller = [(t, t) for t in TILES if t is not None and t < largest]
  return [options.tile, *smaller]


def _candidates(options: RestoreOptions, frames: int, size: tuple[int, int]):
  """Option sets from the fastest to the most frugal."""
  offloads = OFFLOADS[OFFLOADS.index(options.offload):]
  for clip in _clip_ladder(options, frames):
    for tile in _tile_ladder(options, size):
      for offload in offloads:
        yield dataclasses.replace(options, clip_frames=clip, offload=offload, tile=tile)


def plan(options: RestoreOptions, frames: int, size: tuple[int, int], budget: int | None,
         estimate: Estimator) -> Plan:
  """The fastest plan for `frames` frames restored to `size` (h, w) whose estimated peak fits
  `budget` bytes (None: `options` as given); InputError naming the smallest budget that works
  when none fits.

  The most frugal plan is estimated first (an impossible budget fails fast); each candidate's
  DiT stage is estimated before its VAE stages, so tiles are only compiled for the clip lengths
  and offloads whose DiT fits.
  """
  estimate = memoised(estimate)

  def evaluate(candidate: RestoreOptions) -> Plan | None:
    stages = {}
    for name in ("dit", "encode", "decode"):
      stages[name] = estimate(name, candidate)
      if budget is not None and peak_bytes(stages, candidate.offload) > budget:
        return None
    stages = {name: stages[name] for name in STAGES}
    return Plan(candidate, stages, peak_bytes(stages, candidate.offload))

  if budget is None:
    return evaluate(options)
  *_, most_frugal = _candidates(options, frames, size)
  least = peak_bytes({name: estimate(name, most_frugal) for name in STAGES}, "blocks")
  if least > budget:
    raise InputError(
        f"memory budget {budget / GB:.2f} GB is too small for this input: the most frugal plan "
        f"({summary(most_frugal)}) needs {least / GB:.2f} GB; pass --memory-budget "
        f"{math.ceil(least / GB * 100) / 100:.2f} or more")
  fitting = (p for p in map(evaluate, _candidates(options, frames, size))
             if p is not None and p.peak <= budget)
  return next(fitting)  # the last candidate, the most frugal plan, fits
