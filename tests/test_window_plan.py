"""Window partitions equal the official tables, and plans cover the grid exactly once."""

import numpy as np
import pytest

from seedvr2_jax.models.dit import window_plan as wp


def _axis_sizes(windows, axis):
  """Distinct extents along one axis, in window order of first appearance."""
  spans = []
  for win in windows:
    span = (win[2 * axis], win[2 * axis + 1])
    if span not in spans:
      spans.append(span)
  return sorted(spans)


def test_fixture_window_tables(parity_config):
  for method, by_grid in parity_config["windows_per_sample"].items():
    for grid, expected in by_grid.items():
      grid = tuple(int(v) for v in grid.strip("()").split(","))
      assert wp.make_windows(grid, (4, 3, 3), method) == [tuple(w) for w in expected]


# The official adaptive window formula: token grid -> (per-axis window extents, window count), regular and shifted.
WINDOW_TABLE = [
    ((31, 45, 80), wp.REGULAR, ([8, 8, 8, 7], [15] * 3, [27, 27, 26]), 36),
    ((31, 45, 80), wp.SHIFTED, ([4, 8, 8, 8, 3], [7, 15, 15, 8], [13, 27, 27, 13]), 80),
    ((31, 67, 120), wp.REGULAR, (None, [15, 15, 15, 15, 7], [27] * 4 + [12]), 100),
    ((31, 67, 120), wp.SHIFTED, (None, None, None), 125),
    ((9, 30, 53), wp.REGULAR, ([3, 3, 3], [15, 15], [27, 26]), 12),
    ((9, 30, 53), wp.SHIFTED, (None, None, None), 36),
    ((1, 32, 32), wp.REGULAR, ([1], [20, 12], [20, 12]), 4),
    ((1, 32, 32), wp.SHIFTED, (None, None, None), 9),
]


@pytest.mark.parametrize("grid,method,extents,count", WINDOW_TABLE)
def test_spec_window_table(grid, method, extents, count):
  windows = wp.make_windows(grid, (4, 3, 3), method)
  assert len(windows) == count
  for axis, want in enumerate(extents):
    if want is not None:
      got = [b - a for a, b in _axis_sizes(windows, axis)]
      assert got == want


def test_shifted_equals_regular_when_temporal_window_is_one_frame():
  for grid in [(4, 45, 80), (3, 10, 10)]:
    regular = wp.make_windows(grid, (4, 3, 3), wp.REGULAR)
    shifted = wp.make_windows(grid, (4, 3, 3), wp.SHIFTED)
    one_frame = [(i, i + 1) for i in range(grid[0])]
    assert _axis_sizes(regular, 0) == _axis_sizes(shifted, 0) == one_frame


def test_window_size_depends_on_aspect_ratio_not_resolution():
  for grid in [(5, 45, 80), (5, 90, 160), (5, 135, 240)]:
    windows = wp.make_windows(grid, (4, 3, 3), wp.REGULAR)
    h0, h1, w0, w1 = windows[0][2:]
    assert (h1 - h0, w1 - w0) == (15, 27)


@pytest.mark.parametrize("method", wp.WINDOW_METHODS)
@pytest.mark.parametrize("seed", range(6))
def test_plan_covers_grid_once_and_inverts(method, seed):
  rng = np.random.default_rng(seed)
  grid = tuple(int(v) for v in rng.integers(1, [40, 70, 130]))
  plan = wp.window_plan(grid, (4, 3, 3), method)
  n = int(np.prod(grid))
  assert plan.lengths.sum() == n
  flat_slots = plan.gather_idx.reshape(-1)
  # Gathering windows then reading each token's slot returns the token order exactly.
  assert np.array_equal(flat_slots[plan.scatter_idx], np.arange(n))
  # Local positions lie inside their window's extent.
  assert (plan.local_pos >= 0).all() and (plan.local_pos < plan.extent).all()
  # Every window is a box: its token count is the product of its extents.
  for (t0, t1, h0, h1, w0, w1), length in zip(plan.windows, plan.lengths):
    assert length == (t1 - t0) * (h1 - h0) * (w1 - w0)


def test_unknown_method_is_rejected():
  with pytest.raises(ValueError, match="unknown window method"):
    wp.make_windows((2, 4, 4), (4, 3, 3), "swin")
