"""Spatial tiling for frames beyond one device's memory: overlapping tiles, blended linearly.

Tiles all have one size (the last tile of each axis sits flush with the border), so they run as
one compiled step under `lax.map`, one tile at a time. Each tile keeps its own causal caches, so
tiling composes with temporal chunking. Outputs are blended with weights that sum to one: a
tile's outputs within a quarter of the overlap of an inner edge (where its zero padding reaches)
get weight 0, and the middle half of every overlap is a linear cross-fade, so there is no seam.
A stack of local ops whose outputs depend on inputs at most a quarter of the overlap away is
therefore tiled exactly; GroupNorm statistics and the mid-block attention are per tile, which is
why the VAE's tiled output is close to, not equal to, its untiled output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from seedvr2_jax.models.vae.layers import CausalState
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


def tiled_step(step: Callable, plan: TilePlan, in_scale: int, out_scale: int) -> Callable:
  """Wraps `step(x_chunk, state)` so that it runs tile by tile with per-tile causal caches and
  blends the outputs. Input pixels per latent unit: `in_scale`; output: `out_scale` (encode
  8 -> 1, decode 1 -> 8)."""
  th, tw = plan.tile[0] * in_scale, plan.tile[1] * in_scale
  weights = plan.weights(out_scale)
  scale = out_scale

  def run(x, state: CausalState):
    tiles = jnp.stack([x[:, :, y * in_scale:y * in_scale + th, xx * in_scale:xx * in_scale + tw]
                       for y, xx in plan.origins()])

    def one(args):
      tile_x, prev = args
      tile_state = CausalState(prev)
      return step(tile_x, tile_state), tile_state.next

    ys, state.next = jax.lax.map(one, (tiles, state.prev))
    out = jnp.zeros((*ys.shape[1:3], plan.size[0] * scale, plan.size[1] * scale, ys.shape[-1]),
                    jnp.float32)
    for (y, xx), y_tile, w in zip(plan.origins(), ys, weights):
      out = out.at[:, :, y * scale:y * scale + w.shape[0], xx * scale:xx * scale + w.shape[1]].add(
          y_tile.astype(jnp.float32) * w[None, None, :, :, None])
    return out.astype(ys.dtype)

  return run
