"""NaDiT: the SeedVR2 Swin-MMDiT (both official code paths), for batches of same-shape samples.

The official model packs samples of different shapes into one token sequence; here a call takes
a batch of samples sharing one latent shape (different shapes = different calls/compilations),
and each sample gets its own result (the intended semantics: the official 3B code, batched, reads
other samples' text queries and keys; that quirk is not reproduced).
"""

from __future__ import annotations

from collections.abc import Sequence

import einops
import jax
import jax.numpy as jnp
from flax import nnx

from seedvr2_jax.models.dit import layers, quantize
from seedvr2_jax.models.dit.block import NaMMSRTransformerBlock, residual_streams
from seedvr2_jax.models.dit.config import NaDiTConfig
from seedvr2_jax.models.dit.window_attention import build_context


def scan_segments(graphdefs: Sequence[nnx.GraphDef]) -> list[tuple[int, int]]:
  """[start, stop) block ranges covering all blocks in order: each maximal run of two or more
  repeats of a block pair (same graph definitions, hence same structure and windows) is one
  range, every other block a range of its own. The 32-block 3B gives [0, 10) (its separate-weight
  blocks), [10, 30) (shared-weight blocks), [30, 31), [31, 32) (the video-only last block); the
  36-block 7B gives [0, 36)."""
  segments, start, n = [], 0, len(graphdefs)
  while start < n:
    pairs = 0
    while (start + 2 * pairs + 1 < n and graphdefs[start + 2 * pairs] == graphdefs[start]
           and graphdefs[start + 2 * pairs + 1] == graphdefs[start + 1]):
      pairs += 1
    stop = start + 2 * pairs if pairs >= 2 else start + 1
    segments.append((start, stop))
    start = stop
  return segments


def _cut_after(segments: list[tuple[int, int]], taps: Sequence[int]) -> list[tuple[int, int]]:
  """`segments` cut so that every tap ends a range; a cut piece keeps its whole pairs as one
  range when there are two or more, the rest become single blocks."""
  out = []
  for start, stop in segments:
    cuts = sorted({start, stop} | {t + 1 for t in taps if start < t + 1 < stop})
    for a, b in zip(cuts, cuts[1:]):
      pairs = (b - a) // 2 if stop - start > 1 else 0
      if pairs >= 2:
        out.append((a, a + 2 * pairs))
        a += 2 * pairs
      out.extend((i, i + 1) for i in range(a, b))
  return out


def cast_linear_params(state: nnx.State, dtype) -> nnx.State:
  """Linear kernels and biases in `dtype`, the rest (and quantised kernels, dequantised to the
  compute dtype at use) unchanged: what nnx.Linear computes with (it casts them to its dtype),
  so applying the block to the result is bit-identical."""
  def cast(path, x):
    linear = {getattr(k, "key", None) for k in path} & {"kernel", "bias"}
    return x.astype(dtype) if linear and not quantize.is_quantized(x) else x
  return jax.tree_util.tree_map_with_path(cast, state, is_leaf=quantize.is_quantized)


def stack_states(states: Sequence[nnx.State], stack=jnp.stack) -> nnx.State:
  """Block states of one graph -> one state with a leading axis over them (`stack`: jnp.stack,
  or np.stack to stack in host memory)."""
  return jax.tree.map(lambda *xs: stack(xs), *states)


def patchify(vid_bthwc: jnp.ndarray, patch: tuple[int, int, int]) -> jnp.ndarray:
  """(B, T, H, W, C) -> (B, T', H/ph, W/pw, pt*ph*pw*C), features ordered (t, h, w, c).

  With pt > 1 and T % pt != 0 the first frame is repeated in front (official NaPatchIn).
  """
  pt, ph, pw = patch
  _, t, h, w, _ = vid_bthwc.shape
  if h % ph or w % pw:
    raise ValueError(f"latent height/width {h}x{w} must be divisible by the patch {ph}x{pw}")
  if t % pt:
    pad = jnp.repeat(vid_bthwc[:, :1], pt - t % pt, axis=1)
    vid_bthwc = jnp.concatenate([pad, vid_bthwc], axis=1)
  return einops.rearrange(vid_bthwc, "b (T t) (H h) (W w) c -> b T H W (t h w c)",
                          t=pt, h=ph, w=pw)


def unpatchify(x_bthwf: jnp.ndarray, patch: tuple[int, int, int], frames: int) -> jnp.ndarray:
  """Inverse of `patchify`, dropping the frames it padded: -> (B, frames, H, W, C)."""
  pt, ph, pw = patch
  x = einops.rearrange(x_bthwf, "b T H W (t h w c) -> b (T t) (H h) (W w) c", t=pt, h=ph, w=pw)
  return x[:, x.shape[1] - frames:]


class PatchIn(nnx.Module):
  def __init__(self, cfg: NaDiTConfig, rngs: nnx.Rngs):
    feat = cfg.vid_in_channels * cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2]
    self.proj = layers.dense(cfg, feat, cfg.vid_dim, (None, layers.EMBED), rngs=rngs)


class PatchOut(nnx.Module):
  def __init__(self, cfg: NaDiTConfig, rngs: nnx.Rngs):
    feat = cfg.vid_out_channels * cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2]
    self.proj = layers.dense(cfg, cfg.vid_dim, feat, (layers.EMBED, None), rngs=rngs)


class BlockStack(nnx.Module):
  """Blocks [start, stop) as stacked modules for host streaming (`streaming.py`): `modules`
  holds the block of a single-block range, or the even and odd blocks of a range of repeating
  pairs, each with a leading axis over its repeats. `NaDiT` runs it as one `lax.scan` that
  moves one repeat's weights to the device per step."""

  def __init__(self, modules: Sequence[nnx.Module], start: int, stop: int):
    self.modules = nnx.List(modules)
    self.start, self.stop = start, stop


class NaDiT(nnx.Module):
  """Velocity prediction v(x_t, condition, text, t) of SeedVR2."""

  def __init__(self, cfg: NaDiTConfig, rngs: nnx.Rngs,
               blocks: Sequence[NaMMSRTransformerBlock] | None = None):
    """`blocks`: built elsewhere (`train.state.random_split`), else made here from `rngs`."""
    self.cfg = cfg
    self.vid_in = PatchIn(cfg, rngs)
    self.txt_in = (layers.dense(cfg, cfg.txt_in_dim, cfg.txt_dim, (None, layers.EMBED), rngs=rngs)
                   if cfg.has_txt_in else None)
    self.emb_in = layers.TimeEmbedding(cfg, rngs)
    if blocks is None:
      blocks = [NaMMSRTransformerBlock(cfg, i, rngs) for i in range(cfg.num_layers)]
    self.blocks = nnx.List(blocks)
    if cfg.vid_out_norm:
      self.vid_out_norm = layers.RMSNorm(cfg, cfg.vid_dim, layers.EMBED)
      self.vid_out_ada = layers.AdaSingle(cfg, ("out",), False, rngs)
    self.vid_out = PatchOut(cfg, rngs)

  def __call__(self, vid_bthwc: jnp.ndarray, txt_blc: jnp.ndarray, timestep_b: jnp.ndarray,
               txt_len_b: jnp.ndarray | None = None) -> jnp.ndarray:
    """Predicts the velocity.

    Args:
      vid_bthwc: (B, T, H, W, vid_in_channels) latent input [noise | condition | mask].
      txt_blc: (B, L, txt_in_dim) text embeddings (right-padded when lengths differ).
      timestep_b: (B,) timesteps on the 0..1000 scale.
      txt_len_b: optional (B,) int valid text lengths (default: all L).
    Returns:
      (B, T, H, W, vid_out_channels) float32.
    """
    cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
    x_vid, x_txt, emb_bd23, ctx, grid = self._embed(vid_bthwc, txt_blc, timestep_b, txt_len_b)
    x_vid, x_txt = self._blocks(x_vid, x_txt, emb_bd23, ctx, stop=cfg.num_layers)
    if cfg.vid_out_norm:
      # The output head reuses the attention slot of the time embedding (official cache quirk).
      x_vid = self.vid_out_ada.modulate(self.vid_out_norm(x_vid), emb_bd23[:, :, 0], "out")
    out = self.vid_out.proj(x_vid.astype(dtype)).astype(jnp.float32)
    return unpatchify(out.reshape(x_vid.shape[0], *grid, -1), cfg.patch_size,
                      vid_bthwc.shape[1])

  def hidden_states(self, vid_bthwc: jnp.ndarray, txt_blc: jnp.ndarray, timestep_b: jnp.ndarray,
                    tap_layers: Sequence[int], txt_len_b: jnp.ndarray | None = None
                    ) -> tuple[list[jnp.ndarray], list[jnp.ndarray], tuple[int, int, int]]:
    """Video and text token states (B, N, D) and (B, L, D), float32, after blocks `tap_layers`
    (0-based); runs only the blocks up to max(tap_layers). Also returns the token grid
    (T', H', W'). Arguments as in `__call__` (the discriminator trunk)."""
    x_vid, x_txt, emb_bd23, ctx, grid = self._embed(vid_bthwc, txt_blc, timestep_b, txt_len_b)
    taps = {}
    self._blocks(x_vid, x_txt, emb_bd23, ctx, stop=max(tap_layers) + 1, taps=taps.setdefault,
                 tap_layers=tuple(tap_layers))
    return [taps[i][0] for i in tap_layers], [taps[i][1] for i in tap_layers], grid

  def _embed(self, vid_bthwc, txt_blc, timestep_b, txt_len_b):
    cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
    batch = vid_bthwc.shape[0]
    txt_len = txt_blc.shape[1]
    if txt_len_b is None:
      txt_len_b = jnp.full((batch,), txt_len, jnp.int32)
    tokens = patchify(vid_bthwc.astype(dtype), cfg.patch_size)
    grid = tokens.shape[1:4]
    x_vid = self.vid_in.proj(tokens.reshape(batch, -1, tokens.shape[-1])).astype(jnp.float32)
    x_txt = txt_blc.astype(dtype)
    x_txt = (self.txt_in(x_txt) if self.txt_in is not None else x_txt).astype(jnp.float32)
    x_vid, x_txt = residual_streams(x_vid, x_txt)
    emb_bd23 = self.emb_in(timestep_b).reshape(batch, cfg.vid_dim, 2, 3)
    return x_vid, x_txt, emb_bd23, build_context(cfg, grid, txt_len, txt_len_b), grid

  def _blocks(self, x_vid, x_txt, emb_bd23, ctx, *, stop: int, taps=None,
              tap_layers: Sequence[int] = ()):
    """Blocks [0, stop) in order -> (x_vid, x_txt); `taps(i, (x_vid, x_txt))` receives the
    states after each block i in `tap_layers`. With `cfg.scan_layers` each run of repeating
    block pairs (`scan_segments`, cut after every tap) is one `lax.scan` over the pairs' stacked
    states: XLA compiles one pair, and under FSDP gathers one pair's weights at a time instead
    of holding many. Linear weights are stacked in `cfg.dtype` (half the copy in bf16;
    bit-identical, see `cast_linear_params`). Host-streamed blocks (`BlockStack`s, made by
    `streaming.stream_blocks`) run whole: no taps."""
    if isinstance(self.blocks[0], BlockStack):
      if stop != self.cfg.num_layers or tap_layers:
        raise ValueError("host-streamed blocks run all blocks without taps")
      for stack in self.blocks:
        graphdefs, states = zip(*(nnx.split(m) for m in stack.modules))
        x_vid, x_txt = self._scan(graphdefs, states, x_vid, x_txt, emb_bd23, ctx,
                                  to_device=True)
      return x_vid, x_txt
    splits = [nnx.split(block) for block in self.blocks[:stop]]
    ranges = [(i, i + 1) for i in range(stop)]
    if self.cfg.scan_layers:
      ranges = _cut_after(scan_segments([graphdef for graphdef, _ in splits]), tap_layers)
    dtype = jnp.dtype(self.cfg.dtype)
    for start, end in ranges:
      if end - start == 1:
        x_vid, x_txt = self._apply(*splits[start], x_vid, x_txt, emb_bd23, ctx, in_scan=False)
      else:
        stacked = tuple(stack_states([cast_linear_params(splits[i][1], dtype)
                                      for i in range(start + k, end, 2)]) for k in (0, 1))
        x_vid, x_txt = self._scan((splits[start][0], splits[start + 1][0]), stacked, x_vid,
                                  x_txt, emb_bd23, ctx)
      if end - 1 in tap_layers:
        taps(end - 1, (x_vid, x_txt))
    return x_vid, x_txt

  def _scan(self, graphdefs, stacked, x_vid, x_txt, emb_bd23, ctx, *, to_device=False):
    """`lax.scan` over the leading axis of `stacked` (one state per graph definition), each
    step applying the blocks in order; `to_device` moves each step's weights to device memory
    (from host memory) inside the step."""
    def apply(carry, states):
      for graphdef, state in zip(graphdefs, states):
        carry = self._apply(graphdef, state, *carry, emb_bd23, ctx, in_scan=True)
      return carry

    if not to_device:
      return jax.lax.scan(lambda carry, states: (apply(carry, states), None), (x_vid, x_txt),
                          tuple(stacked))[0]

    # Host-memory weights: each step slices its block (keeping the stacked axis), copies the
    # slice to the device and drops the axis there, so nothing but the slice touches host
    # memory (XLA's GPU compiler rejects reshapes of host-memory values inside the loop).
    def step(carry, i):
      states = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, i, 1), tuple(stacked))
      states = jax.tree.map(lambda x: x[0], jax.device_put(states, jax.memory.Space.Device))
      return apply(carry, states), None

    length = jax.tree.leaves(stacked)[0].shape[0]
    return jax.lax.scan(step, (x_vid, x_txt), jnp.arange(length))[0]

  def _apply(self, graphdef, state, x_vid, x_txt, emb_bd23, ctx, *, in_scan: bool):
    """One block given as graph definition and state, rematerialised in the backward pass as
    `cfg.remat` says. jax.checkpoint over the state (not nnx.remat over the module) also works
    when the model is merged outside a transform it then runs in (a frozen teacher or
    discriminator inside another model's gradient). Inside `lax.scan` (`in_scan`) the
    recomputation cannot be merged with the forward pass by CSE anyway, so it goes without
    jax.checkpoint's optimisation barriers (`prevent_cse=False`, as the JAX docs advise).
    Quantised kernels (`quantize.py`) are dequantised to `cfg.dtype` here, inside the
    program."""
    dtype = jnp.dtype(self.cfg.dtype)
    run = lambda s, *args: nnx.merge(graphdef, quantize.dequantize(s, dtype))(*args, ctx)
    policy = self.cfg.remat_policy
    if policy is None:
      return run(state, x_vid, x_txt, emb_bd23)
    return jax.checkpoint(run, policy=policy, prevent_cse=not in_scan)(
        state, x_vid, x_txt, emb_bd23)
