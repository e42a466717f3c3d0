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
from seedvr2_jax.infer.options import OFFLOAD_MODES, RestoreOptions

STAGES = ("encode", "dit", "decode")
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
  """XLA's memory estimate of one stage program, in device bytes (`one_step.Restorer.memory`).

  arguments, outputs, temporaries: its memory analysis (arguments on the device only: weights
  it streams from host memory are not among them; outputs: those not written into donated
  arguments); stage_weights: its own weights on the device while it runs (part of
  `arguments`); weights: all weights on the device while it runs (with offload "none" the
  other stages' too); held: arrays of earlier stages alive while it runs that it does not take
  (the raw clip; during the DiT, the encode's pre-processed frames that the decode takes).
  """

  stage: str
  arguments: int
  outputs: int
  temporaries: int
  stage_weights: int
  weights: int
  held: int = 0

  @property
  def working(self) -> int:
    """Everything but weights at the program's peak: inputs, outputs, temporaries, held
    arrays."""
    return (self.arguments - self.stage_weights + self.outputs + self.temporaries
            + self.held)

  @property
  def total(self) -> int:
    """The device memory the program needs, weights of other stages on the device included."""
    return self.working + self.weights


def peak_bytes(stages: dict[str, StageMemory], offload: str) -> int:
  """The device peak of a restore whose stages need `stages`, with weights placed by `offload`."""
  if offload == "none":
    return (sum(s.stage_weights for s in stages.values())
            + max(s.working for s in stages.values()))
  return max(s.stage_weights + s.working for s in stages.values())


def summary(options: RestoreOptions) -> str:
  """The options a plan chooses, in words."""
  tile = ("none" if options.tile is None
          else f"{options.tile[1]}x{options.tile[0]} (overlap {options.tile_overlap})")
  return (f"clips of {options.clip_frames or 'all'} frames, offload {options.offload}, VAE "
          f"tiles {tile}, DiT weights {options.dit_weights}")


@dataclasses.dataclass(frozen=True)
class Plan:
  """The options chosen, each stage's estimate, the peak they give and the budget (bytes; None:
  no budget)."""

  options: RestoreOptions
  stages: dict[str, StageMemory]
  peak: int
  budget: int | None

  def describe(self) -> list[str]:
    """The plan in words: the options and peak, then each stage's estimate."""
    limit = "no budget" if self.budget is None else f"budget {self.budget / GB:.2f} GB"
    return [f"memory plan ({limit}): {summary(self.options)}; estimated peak "
            f"{self.peak / GB:.2f} GB",
            *(f"  {name}: its weights {s.stage_weights / GB:.2f} GB, working {s.working / GB:.2f} "
              f"GB (XLA: arguments {s.arguments / GB:.2f} GB, outputs {s.outputs / GB:.2f} GB, "
              f"temporaries {s.temporaries / GB:.2f} GB; held {s.held / GB:.2f} GB)"
              for name, s in self.stages.items())]


class NoEstimate(Exception):
  """Raised by an estimator where the backend gives no memory analysis of its programs."""


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
  """Clip lengths to try: the requested one (None: the whole video), then shorter ones longer
  than the clip overlap."""
  longest = min(options.clip_frames or frames, frames)
  return [options.clip_frames,
          *(c for c in CLIP_FRAMES if options.clip_overlap < c < longest)]


def _tile_ladder(options: RestoreOptions, size: tuple[int, int]) -> list[tuple[int, int] | None]:
  """VAE tiles to try: the requested one, then the smaller ones of TILES that tile `size`."""
  largest = min(options.tile) if options.tile is not None else max(size)
  smaller = [(t, t) for t in TILES if t is not None and t < largest]
  return [options.tile, *smaller]


def _candidates(options: RestoreOptions, frames: int, size: tuple[int, int]):
  """Option sets from the fastest to the most frugal."""
  offloads = OFFLOAD_MODES[OFFLOAD_MODES.index(options.offload):]
  for clip in _clip_ladder(options, frames):
    for tile in _tile_ladder(options, size):
      for offload in offloads:
        yield dataclasses.replace(options, clip_frames=clip, offload=offload, tile=tile)


def plan(options: RestoreOptions, frames: int, size: tuple[int, int], budget: int | None,
         estimate: Estimator) -> Plan:
  """The fastest plan for clips of at most `frames` frames restored to `size` (h, w) whose
  estimated peak fits `budget` bytes (None: `options` as given); InputError naming the smallest
  budget that works when none fits.

  The requested options are estimated first (usually they fit, and their programs are those
  the restore runs), then the most frugal plan (an impossible budget fails fast); each
  candidate's DiT stage is estimated before its VAE stages, so tiles are only compiled for the
  clip lengths and offloads whose DiT fits.
  """
  estimate = memoised(estimate)

  def evaluate(candidate: RestoreOptions) -> Plan | None:
    stages = {}
    for name in ("dit", "encode", "decode"):
      stages[name] = estimate(name, candidate)
      if budget is not None and peak_bytes(stages, candidate.offload) > budget:
        return None
    stages = {name: stages[name] for name in STAGES}
    return Plan(candidate, stages, peak_bytes(stages, candidate.offload), budget)

  requested = evaluate(options)
  if requested is not None:
    return requested
  *_, most_frugal = _candidates(options, frames, size)
  least = peak_bytes({name: estimate(name, most_frugal) for name in STAGES}, most_frugal.offload)
  if least > budget:
    raise InputError(
        f"memory budget {budget / GB:.2f} GB is too small for this input: the most frugal plan "
        f"({summary(most_frugal)}) needs {least / GB:.2f} GB; pass --memory-budget "
        f"{math.ceil(least / GB * 100) / 100:.2f} or more{_smaller_weights(options)}")
  # The last candidate, the most frugal plan, fits.
  return next(p for p in map(evaluate, _candidates(options, frames, size)) if p is not None)


def _smaller_weights(options: RestoreOptions) -> str:
  """A hint at the one choice the planner leaves to the user: quantised DiT weights change the
  output and are chosen when the models load."""
  native = options.dit_weights == "native"
  return " (or --dit-weights int8 for smaller DiT weights)" if native else ""
