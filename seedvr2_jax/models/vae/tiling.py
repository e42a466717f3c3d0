"""Spatial tiling for frames beyond one device's memory: overlapping tiles, blended linearly.

Tiles all have one size (the last tile of each axis sits flush with the border), so they run as
one compiled program under `lax.scan`, one tile at a time. Tiling is tile-major: each tile runs
through the whole clip (all its temporal chunks, carrying its own causal caches) before the next
starts, so only one tile's caches and one tile's output are alive besides the blended result.
Outputs are blended with weights that sum to one: a tile's outputs within a quarter of the
overlap of an inner edge (where its zero padding reaches) get weight 0, and the middle half of
every overlap is a linear cross-fade, so there is no seam. A stack of local ops whose outputs
depend on inputs at most a quarter of the overlap away is therefore tiled exactly; GroupNorm
statistics and the mid-block attention are per tile, which is why the VAE's tiled output is
close to, not equal to, its untiled output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from seedvr2_jax.utils import blend


@dataclasses.dataclass(frozen=True)
class TilePlan:
  """Tiles of an (h, w) latent frame (tile origins, sizes and blend margins in latent units)."""

  size: tuple[int, int]
  tile: tuple[int, int]
  starts: tuple[tuple[int, ...], tuple[int, ...]]
  margin: tuple[int, int]

  @property
  def count(self) -> int:
    return len(self.starts[0]) * len(self.starts[1])

  def origins(self) -> list[tuple[int, int]]:
    return [(y, x) for y in self.starts[0] for x in self.starts[1]]

  def weights(self, scale: int) -> np.ndarray:
    """(count, tile_h * scale, tile_w * scale) blend weights at `scale` x this plan's size,
    normalised so the weights of all tiles sum to one everywhere."""
    per_axis = [blend.ramp_weights(t * scale, [s * scale for s in st], m * scale)
                for t, st, m in zip(self.tile, self.starts, self.margin)]
    w = np.einsum("ih,jw->ijhw", *per_axis).reshape(-1, *[t * scale for t in self.tile])
    total = np.zeros([n * scale for n in self.size], np.float32)
    for (y, x), wi in zip(self.origins(), w):
      total[y * scale:y * scale + wi.shape[0], x * scale:x * scale + wi.shape[1]] += wi
    return np.stack([
        wi / total[y * scale:y * scale + wi.shape[0], x * scale:x * scale + wi.shape[1]]
        for (y, x), wi in zip(self.origins(), w)])


def tile_plan(size: tuple[int, int], tile: tuple[int, int], overlap: tuple[int, int]) -> TilePlan:
  """Tiles of `tile` covering `size` with at least `overlap` between neighbours."""
  tile = tuple(min(t, n) for t, n in zip(tile, size))
  starts = tuple(tuple(blend.window_starts(n, t, o)) for n, t, o in zip(size, tile, overlap))
  return TilePlan(tuple(size), tile, starts, tuple(o // 4 for o in overlap))


def tiled(run: Callable, plan: TilePlan, in_scale: int, out_scale: int) -> Callable:
  """Wraps `run(x)`, a whole clip (B, T, H, W, C) -> (B, T', H', W', C'), so that it runs one
  spatial tile at a time over the whole clip (tile-major: only that tile's causal caches are
  alive) and adds each tile's weighted output to one float32 accumulator as it comes, so no
  stack of all tiles' outputs is ever held. Input pixels per latent unit: `in_scale`; output:
  `out_scale` (encode 8 -> 1, decode 1 -> 8)."""
  weights = jnp.asarray(plan.weights(out_scale))
  origins = jnp.asarray(plan.origins(), jnp.int32)

  def run_tiled(x):
    tile_shape = (*x.shape[:2], plan.tile[0] * in_scale, plan.tile[1] * in_scale, x.shape[-1])
    tile_out = jax.eval_shape(run, jax.ShapeDtypeStruct(tile_shape, x.dtype))
    b, t, _, _, c = tile_out.shape
    out = jnp.zeros((b, t, plan.size[0] * out_scale, plan.size[1] * out_scale, c), jnp.float32)

    def add_tile(out, args):
      origin, w = args
      y_tile = run(jax.lax.dynamic_slice(x, (0, 0, *(origin * in_scale), 0), tile_shape))
      at = (0, 0, *(origin * out_scale), 0)
      blended = (jax.lax.dynamic_slice(out, at, y_tile.shape)
                 + y_tile.astype(jnp.float32) * w[None, None, :, :, None])
      return jax.lax.dynamic_update_slice(out, blended, at), None

    out, _ = jax.lax.scan(add_tile, out, (origins, weights))
    return out.astype(tile_out.dtype)

  return run_tiled
