"""The memory planner's choices: the fastest plan that fits, in the ladder's order, and the
smallest workable budget when none does; estimates from a model of the stages' memory, and
from XLA's analysis of the compiled stage programs of a tiny model."""

import re

import pytest

from seedvr2_jax.errors import InputError
from seedvr2_jax.infer import clips, memory_plan, restore
from seedvr2_jax.infer.memory_plan import GB, StageMemory
from seedvr2_jax.infer.options import RestoreOptions

FRAMES, SIZE = 121, (1080, 1920)


def _memory(stage, weights, working):
  """A stage needing `weights` bytes of its own weights and `working` bytes besides (all
  arguments, as XLA counts them, with the weights among them)."""
  return StageMemory(stage, arguments=int(weights + working), outputs=0, temporaries=0,
                     stage_weights=int(weights), weights=int(weights))


def fake_estimate(calls):
  """Stage memory that grows with clip length and tile area: DiT weights 6 GB (1 GB with its
  blocks streamed), VAE weights 0.5 GB each, DiT work 40 MB per frame, VAE work 50 MB per frame
  untiled (scaled by the tile's share of the frame)."""

  def estimate(stage, o):
    calls.append((stage, o.clip_frames, o.offload, o.tile))
    frames = o.clip_frames or FRAMES
    if stage == "dit":
      return _memory(stage, (1 if o.offload == "blocks" else 6) * GB, 0.04 * GB * frames)
    share = 1.0 if o.tile is None else min(1.0, o.tile[0] * o.tile[1] / (SIZE[0] * SIZE[1]))
    return _memory(stage, 0.5 * GB, 0.05 * GB * frames * share)

  return estimate


def _plan(budget_gb, **options):
  calls = []
  budget = None if budget_gb is None else int(budget_gb * GB)
  return memory_plan.plan(RestoreOptions(**options), FRAMES, SIZE, budget,
                          fake_estimate(calls)), calls


def _chosen(result):
  o = result.options
  return o.clip_frames, o.offload, o.tile


@pytest.mark.parametrize("budget_gb, expected", [
    (None, (None, "none", None)),  # no budget: the options as given
    (40.0, (None, "none", None)),  # everything fits: nothing changes
    (13.0, (None, "stages", None)),  # 7 GB of weights + 6.05 GB of decode: one stage's weights
    (8.5, (None, "blocks", None)),  # the DiT's 6 GB + 4.84 GB: its blocks from host
    (6.0, (None, "blocks", (1024, 1024))),  # the VAE's 6.05 GB of work: tiles
    (5.0, (81, "blocks", None)),  # the DiT's work at 121 and 101 frames: shorter clips
])
def test_the_fastest_plan_that_fits_is_chosen(budget_gb, expected):
  result, _ = _plan(budget_gb)
  assert _chosen(result) == expected
  if budget_gb is not None:
    assert result.peak <= budget_gb * GB
  assert result.peak == memory_plan.peak_bytes(result.stages, result.options.offload)


def test_requested_options_bound_the_ladder():
  # A requested clip length and offload are where the search starts, never exceeded.
  result, _ = _plan(40.0, clip_frames=33, offload="stages", tile=(512, 512))
  assert _chosen(result) == (33, "stages", (512, 512))
  result, _ = _plan(2.5, clip_frames=33, offload="stages", tile=(512, 512))
  assert _chosen(result) == (33, "blocks", (512, 512))


def test_each_stage_is_estimated_once_per_program():
  _, calls = _plan(5.0)
  assert len(calls) == len(set(calls))
  # The VAE is not estimated for clip lengths whose DiT cannot fit (121 and 101 frames).
  assert [c for c in calls if c[0] == "dit" and c[1] in (None, 101)]
  assert not [c for c in calls if c[0] != "dit" and c[1] in (None, 101)]


def test_an_impossible_budget_names_the_smallest_that_works():
  with pytest.raises(InputError, match="too small for this input") as error:
    _plan(1.0)
  assert "\n" not in str(error.value) and "--dit-weights int8" in str(error.value)
  needed = float(re.search(r"--memory-budget (\d+\.\d+)", str(error.value)).group(1))
  frugal = 1 * GB + 0.04 * GB * 21  # 21-frame clips, blocks from host: the DiT's peak
  assert needed * GB >= frugal and needed == pytest.approx(frugal / GB, abs=0.01)
  result, _ = _plan(needed)
  assert _chosen(result) == (21, "blocks", None) and result.peak <= needed * GB


def test_describe_names_the_choices_and_each_stage():
  result, _ = _plan(6.0)
  lines = result.describe()
  assert lines[0] == ("memory plan (budget 6.00 GB): clips of all frames, offload blocks, VAE "
                      "tiles 1024x1024 (overlap 64), DiT weights native; estimated peak 5.84 GB")
  assert [line.split(":")[0].strip() for line in lines[1:]] == ["encode", "dit", "decode"]
  assert lines[2] == ("  dit: its weights 1.00 GB, working 4.84 GB (XLA: arguments 5.84 GB, "
                      "outputs 0.00 GB, temporaries 0.00 GB; held 0.00 GB)")


def test_requested_options_that_fit_are_the_only_ones_estimated():
  _, calls = _plan(40.0)
  assert calls == [("dit", None, "none", None), ("encode", None, "none", None),
                   ("decode", None, "none", None)]


# XLA's estimates of the tiny restore models: 9 raw frames of 23x37 restored to 18x30, where
# the ladder has one shorter clip (5 frames) and one tile (16x16).
TINY_FRAMES, TINY_SIZE = 9, (18, 30)


@pytest.fixture(scope="module")
def xla_plan(restore_models):
  """plan(budget bytes, **options) with the real estimator; one session, so each stage program
  is compiled once for the module."""
  session = restore.Session(restore_models, mesh=None)
  length = lambda o: clips.plan_clips(TINY_FRAMES, o.clip_frames, o.clip_overlap).length
  estimate = restore.memory_estimator(session, TINY_SIZE, 8,
                                      lambda o: (1, length(o), 23, 37, 3))

  def plan(budget, **options):
    options = RestoreOptions(cache_dir="", resolution=TINY_SIZE, clip_overlap=2, tile_overlap=8,
                             **options)
    return memory_plan.plan(options, TINY_FRAMES, TINY_SIZE, budget, estimate)

  with pytest.MonkeyPatch.context() as ladders:
    ladders.setattr(memory_plan, "CLIP_FRAMES", (5,))
    ladders.setattr(memory_plan, "TILES", (None, 16))
    yield plan


def test_xla_estimates_choose_offload_then_tiles_then_shorter_clips(xla_plan):
  """Budgets from the measured peaks: the requested peak keeps the options, a byte less moves
  the weights of the stages not running off the device; below that (the tiny model's decode
  dominates, so streaming the DiT's blocks saves nothing) the VAE is tiled, then clips
  shorten; below the most frugal plan the error names its peak."""
  requested = xla_plan(None)
  assert xla_plan(requested.peak).options == requested.options

  offloaded = xla_plan(requested.peak - 1)
  assert _chosen(offloaded) == (None, "stages", None) and offloaded.peak < requested.peak

  tiled = xla_plan(offloaded.peak - 1, offload="stages")
  assert _chosen(tiled) == (None, "stages", (16, 16)) and tiled.peak < offloaded.peak

  shorter = xla_plan(tiled.peak - 1, offload="stages")
  assert _chosen(shorter) == (5, "stages", (16, 16)) and shorter.peak < tiled.peak

  frugal = xla_plan(None, clip_frames=5, offload="blocks", tile=(16, 16))
  with pytest.raises(InputError, match=f"needs {frugal.peak / GB:.2f} GB"):
    xla_plan(frugal.peak - 1)
