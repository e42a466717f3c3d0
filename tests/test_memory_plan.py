"""The memory planner's choices: the fastest plan that fits, in the ladder's order, and the
smallest workable budget when none does (estimates from a model of the stages' memory)."""

import re

import pytest

from seedvr2_jax.errors import InputError
from seedvr2_jax.infer import memory_plan
from seedvr2_jax.infer.memory_plan import GB, StageMemory
from seedvr2_jax.infer.options import RestoreOptions

FRAMES, SIZE = 121, (1080, 1920)


def fake_estimate(calls):
  """Stage memory that grows with clip length and tile area: DiT weights 6 GB (1 GB with its
  blocks streamed), VAE weights 0.5 GB each, DiT work 40 MB per frame, VAE work 50 MB per frame
  untiled (scaled by the tile's share of the frame)."""

  def estimate(stage, o):
    calls.append((stage, o.clip_frames, o.offload, o.tile))
    frames = o.clip_frames or FRAMES
    if stage == "dit":
      return StageMemory(int((1 if o.offload == "blocks" else 6) * GB), int(0.04 * GB * frames))
    share = 1.0 if o.tile is None else min(1.0, o.tile[0] * o.tile[1] / (SIZE[0] * SIZE[1]))
    return StageMemory(int(0.5 * GB), int(0.05 * GB * frames * share))

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
  assert "\n" not in str(error.value)
  needed = float(re.search(r"--memory-budget (\d+\.\d+)", str(error.value)).group(1))
  frugal = 1 * GB + 0.04 * GB * 21  # 21-frame clips, blocks from host: the DiT's peak
  assert needed * GB >= frugal and needed == pytest.approx(frugal / GB, abs=0.01)
  result, _ = _plan(needed)
  assert _chosen(result) == (21, "blocks", None) and result.peak <= needed * GB


def test_describe_names_the_choices_and_each_stage():
  result, _ = _plan(6.0)
  lines = result.describe(int(6.0 * GB))
  assert lines[0] == ("memory plan (budget 6.00 GB): clips of all frames, offload blocks, VAE "
                      "tiles 1024x1024 (overlap 64), DiT weights native; estimated peak 5.84 GB")
  assert [line.split(":")[0].strip() for line in lines[1:]] == ["encode", "dit", "decode"]
