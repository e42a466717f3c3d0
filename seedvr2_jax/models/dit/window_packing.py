"""The windows of a layer packed into one sequence of segments (the splash attention layout).

Window i becomes the segment [its video tokens, all L text tokens, padding to the next multiple
of the kernel block], so no window is padded to the largest one and every segment starts on a
block boundary (the kernel skips the tiles between segments). Text slots past a sample's text
length and the padding get segment id n (the number of windows): they attend among themselves
and their outputs are discarded. Static indices only (numpy, trace time).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from seedvr2_jax.models.dit import window_plan as window_plan_lib


@dataclasses.dataclass(frozen=True, eq=False)
class PackedLayout:
  """Static indices into the buffer [video tokens (N); text tokens (L)], P packed slots.

  gather_idx: (P,) int32, buffer row of each slot (padding -> 0).
  segment:    (P,) int32, window of each slot; padding -> n.
  txt_pos:    (P,) int32, text index of each text slot, -1 elsewhere.
  vid_slot:   (N,) int32, slot holding each video token.
  txt_slot:   (n, L) int32, slot of text token l in window i.
  block_segments: window of each block of `block` slots (P = len * block).
  """

  gather_idx: np.ndarray
  segment: np.ndarray
  txt_pos: np.ndarray
  vid_slot: np.ndarray
  txt_slot: np.ndarray
  block_segments: tuple[int, ...]


@functools.lru_cache(maxsize=256)
def packed_layout(grid: tuple[int, int, int], num_windows: tuple[int, int, int], method: str,
                  txt_len: int, block: int) -> PackedLayout:
  """The packed layout of one layer's windows on a token grid (`block`: the kernel tile)."""
  plan = window_plan_lib.window_plan(grid, num_windows, method)
  n, num_tokens = plan.num_windows, int(np.prod(grid))
  spans = -(-(plan.lengths + txt_len) // block) * block
  starts = np.concatenate([[0], np.cumsum(spans)[:-1]])
  size = int(spans.sum())
  gather_idx = np.zeros(size, np.int32)
  segment = np.full(size, n, np.int32)
  txt_pos = np.full(size, -1, np.int32)
  txt_slot = starts[:, None] + plan.lengths[:, None] + np.arange(txt_len)[None, :]
  for i, (start, length) in enumerate(zip(starts, plan.lengths)):
    gather_idx[start:start + length] = plan.gather_idx[i, :length]
    gather_idx[txt_slot[i]] = num_tokens + np.arange(txt_len)
    segment[start:start + length + txt_len] = i
    txt_pos[txt_slot[i]] = np.arange(txt_len)
  window, slot = np.divmod(plan.scatter_idx, plan.max_len)
  vid_slot = (starts[window] + slot).astype(np.int32)
  block_segments = tuple(int(s) for s in np.repeat(np.arange(n), spans // block))
  return PackedLayout(gather_idx, segment, txt_pos, vid_slot, txt_slot.astype(np.int32),
                      block_segments)
