"""Pallas TPU splash attention over packed segments.

Independent sequences (the windows of a DiT layer) are packed into one sequence of segments; a
token attends only to the tokens of its own segment. The packing is static (numpy, trace time)
and every segment starts on a `BLOCK` boundary, so each (q block, kv block) tile of the kernel
lies in one segment or in two, and the kernel skips the tiles across segments: the work is the
sum of the segments' squared lengths (rounded up to blocks), not the packed length squared.
Inside the computed tiles, per-sample segment ids mask exactly; they may split a static segment
further (padding gets an id of its own).

The kernel is `jax.experimental.pallas.ops.tpu.splash_attention`: compiled by Mosaic on TPU, run
in Pallas interpret mode elsewhere, chosen at lowering (`lax.platform_dependent`), so a CPU host
can compile it for a TPU topology. Mosaic kernels are not partitioned by XLA: under a mesh
context (`jax.set_mesh` or `jax.sharding.use_abstract_mesh`) the kernel runs in a shard_map with
the batch over the batch axes and the heads over "tensor" and "sequence" (where they divide);
without one it sees the whole arrays (one device).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu import splash_attention as splash
from jax.sharding import PartitionSpec

from seedvr2_jax.parallel.mesh import BATCH_AXES

# The q and kv tile of every kernel phase (forward, dq, dkv); segments start on its multiples.
BLOCK = 128
HEAD_AXES = ("tensor", "sequence")


class BlockDiagonalMask(splash.Mask):
  """Static mask of a packed sequence: (q, kv) may attend iff their blocks share a segment.

  block_segments: the segment of each block of `block` tokens (non-decreasing).
  """

  def __init__(self, block_segments: tuple[int, ...], block: int):
    self.block_segments = np.asarray(block_segments, np.int32)
    self.block = block
    # The kernel's mask processing reads the mask one block at a time, for every block pair:
    # those reads get shared read-only constant blocks (no per-block arrays built).
    self._blocks = tuple(np.full((block, block), value) for value in (False, True))
    for constant in self._blocks:
      constant.setflags(write=False)

  @property
  def shape(self) -> tuple[int, int]:
    size = len(self.block_segments) * self.block
    return size, size

  def __getitem__(self, idx) -> np.ndarray:
    q_slice, kv_slice = idx
    q_block, q_offset = divmod(q_slice.start or 0, self.block)
    kv_block, kv_offset = divmod(kv_slice.start or 0, self.block)
    if (q_offset == kv_offset == 0 and q_slice.stop == (q_block + 1) * self.block
        and kv_slice.stop == (kv_block + 1) * self.block):
      same = self.block_segments[q_block] == self.block_segments[kv_block]
      return self._blocks[int(same)]
    q_seg, kv_seg = (self.block_segments[np.arange(*s.indices(n)) // self.block]
                     for s, n in zip((q_slice, kv_slice), self.shape))
    return q_seg[:, None] == kv_seg[None, :]

  def __eq__(self, other) -> bool:
    return (isinstance(other, BlockDiagonalMask) and self.block == other.block
            and np.array_equal(self.block_segments, other.block_segments))

  def __hash__(self) -> int:
    return hash((self.block, self.block_segments.tobytes()))


@functools.lru_cache(maxsize=64)
def _kernel(block_segments: tuple[int, ...], heads: int, block: int, interpret: bool):
  """The splash kernel (H, S, d) for one static packing; its mask tables are built once."""
  sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                            block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                            block_q_dq=block, block_kv_dq=block)
  mask = splash.MultiHeadMask([BlockDiagonalMask(block_segments, block)] * heads)
  with jax.ensure_compile_time_eval():  # concrete tables, so the cached kernel outlives a trace
    return splash.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                  interpret=interpret)


def _dividing_axes(mesh, axes: tuple[str, ...], size: int) -> tuple[str, ...] | None:
  """The axes of `axes` in `mesh` (size > 1) whose product divides `size`, greedily."""
  picked, product = [], 1
  for axis in axes:
    n = dict(mesh.shape).get(axis, 1)
    if n > 1 and size % (product * n) == 0:
      picked.append(axis)
      product *= n
  return tuple(picked) or None


def segment_attention(q_bshd: jax.Array, k_bshd: jax.Array, v_bshd: jax.Array,
                      segment_ids_bs: jax.Array, block_segments: tuple[int, ...], *,
                      block: int = BLOCK) -> jax.Array:
  """softmax(q k^T / sqrt(d)) v of every token over the tokens of its segment.

  Args:
    q_bshd, k_bshd, v_bshd: (B, S, H, d) packed queries, keys and values (same dtype),
      S = len(block_segments) * block.
    segment_ids_bs: (B, S) int32; a token attends to the tokens with its id in the blocks of
      its own static segment (every id used by a valid query should lie in one segment).
    block_segments: static segment of each block of `block` tokens (non-decreasing).
  Returns:
    (B, S, H, d) in q's dtype.
  """
  batch, seq, heads, head_dim = q_bshd.shape
  if seq != len(block_segments) * block:
    raise ValueError(f"packed length {seq} != {len(block_segments)} blocks of {block}")
  scale = 1.0 / math.sqrt(head_dim)
  q_bshd = (q_bshd.astype(jnp.float32) * scale).astype(q_bshd.dtype)
  q, k, v = (x.transpose(0, 2, 1, 3) for x in (q_bshd, k_bshd, v_bshd))

  def run(interpret, q, k, v, ids):
    kernel = _kernel(tuple(block_segments), q.shape[1], block, interpret)
    return jax.vmap(lambda *a: kernel(*a[:3], segment_ids=splash.SegmentIds(a[3], a[3])))(
        q, k, v, ids)

  def local(q, k, v, ids):
    return jax.lax.platform_dependent(q, k, v, ids, tpu=functools.partial(run, False),
                                      default=functools.partial(run, True))

  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty:
    batch_axes = _dividing_axes(mesh, BATCH_AXES, batch)
    qkv = PartitionSpec(batch_axes, _dividing_axes(mesh, HEAD_AXES, heads))
    local = jax.shard_map(local, mesh=mesh, in_specs=(qkv, qkv, qkv, PartitionSpec(batch_axes)),
                          out_specs=qkv, check_vma=False)
  return local(q, k, v, segment_ids_bs.astype(jnp.int32)).transpose(0, 2, 1, 3)
