"""One-step SeedVR2 restoration of a clip, as the official inference script
(`projects/inference_seedvr2_3b.py`) runs it:

  lq (T, H, W, 3) in [-1, 1] -> pad to 4n+1 frames -> VAE encode, posterior sample, * 0.9152
  -> condition [lq latent | ones] -> DiT(noise | condition, text, t = 1000) = v
  -> x0 = noise - v -> VAE decode (x0 / 0.9152) -> trim -> colour fix against lq -> uint8.

Every function here is pure and traceable; `restore_clip` is the whole restoration in one
function. `Restorer` runs it as separate compiled stage programs (encode, DiT, decode chunk by
chunk from the host), each stage's weights placed by `options.offload` (`weights.py`). The VAE
chunks and tiles and the colour fix come from `options.RestoreOptions`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seedvr2_jax.diffusion import condition, schedule
from seedvr2_jax.infer import colorfix, executables, preprocess
from seedvr2_jax.infer.memory_plan import STAGES, StageMemory
from seedvr2_jax.infer.options import RestoreOptions
from seedvr2_jax.infer.weights import StageWeights, host_sharding
from seedvr2_jax.models.dit import streaming
from seedvr2_jax.models.dit.nadit import NaDiT
from seedvr2_jax.models.vae import codec
from seedvr2_jax.models.vae.autoencoder import VideoAutoencoder
from seedvr2_jax.models.vae.layers import CausalState
from seedvr2_jax.parallel import mesh as mesh_lib


def _tiles(options: RestoreOptions) -> dict:
  """The VAE tiling arguments of `codec.encode` / `codec.decode`."""
  return dict(tile_px=options.tile, overlap_px=(options.tile_overlap,) * 2)


def encode_lq(vae: VideoAutoencoder, lq_bthwc, eps, options: RestoreOptions):
  """Padded LQ pixels -> scaled DiT condition latent (posterior sample with noise `eps`)."""
  moments = codec.encode(vae, lq_bthwc, chunk_frames=options.encode_chunk, **_tiles(options))
  mean, logvar = codec.split_moments(moments)
  z = codec.sample_posterior(mean, logvar, eps)
  return z * vae.cfg.scaling_factor + vae.cfg.shifting_factor


def predict_x0(dit: NaDiT, noise, lq_latent, txt_blc, txt_len_b=None):
  """One Euler step from t = T of the v-prediction lerp schedule: x0 = noise - v."""
  vid = condition.model_input(noise, condition.sr_condition(lq_latent))
  timestep = jnp.full((noise.shape[0],), schedule.T, jnp.float32)
  return schedule.x0_from_v(noise, dit(vid, txt_blc, timestep, txt_len_b), timestep)


def decode_x0(vae: VideoAutoencoder, x0, options: RestoreOptions):
  """DiT-scaled latent -> pixels (B, T, H, W, 3) float32 in about [-1, 1]."""
  z = (x0 - vae.cfg.shifting_factor) / vae.cfg.scaling_factor
  return codec.decode(vae, z, chunk_latents=options.decode_chunk,
                      **_tiles(options)).astype(jnp.float32)


def decode_chunk(vae: VideoAutoencoder, x0, caches, options: RestoreOptions):
  """A chunk of DiT-scaled latents and the causal caches of the chunk before it (None: the first
  chunk) -> (pixels (B, T, H, W, 3) float32, the caches of the next chunk). With tiling the
  chunk is the whole clip, decoded by `decode_x0`: tile-major (`tiling.tiled`), each tile
  through all its chunks with its own caches, so no caches cross the program's boundary."""
  if options.tile is not None:
    return decode_x0(vae, x0, options), {}
  state = CausalState(caches)
  z = (x0 - vae.cfg.shifting_factor) / vae.cfg.scaling_factor
  return vae.decode_chunk(z, state).astype(jnp.float32), state.next


def finish(decoded_bthwc, lq_bthwc, options: RestoreOptions, bits: int = 8):
  """Decoded frames -> colour fixed against the matching LQ frames -> uint8 (uint16 for `bits`
  > 8); `decoded` may hold more frames (padding) than `lq`."""
  decoded = decoded_bthwc[:, :lq_bthwc.shape[1]]
  fixed = jax.vmap(lambda r, l: colorfix.color_fix(r, l, options.colorfix))(decoded, lq_bthwc)
  return to_pixels(fixed, bits)


def decode_ranges(latent_frames: int, chunk: int | None) -> tuple[tuple[int, int], ...]:
  """Latent frame ranges [a, b) decoded one chunk at a time, as `codec.decode` chunks them: the
  first frame alone, then `chunk` frames at a time (None: all at once)."""
  if chunk is None or latent_frames <= 1:
    return ((0, latent_frames),)
  bounds = [0, *range(1, latent_frames, chunk), latent_frames]
  return tuple(zip(bounds[:-1], bounds[1:]))


def first_pixel(latent: int, temporal_factor: int) -> int:
  """The first decoded frame of latent frame `latent`: the first latent decodes to one frame,
  each later one to `temporal_factor` frames."""
  return 0 if latent == 0 else 1 + temporal_factor * (latent - 1)


def to_uint8(frames):
  """[-1, 1] -> uint8 with the official rounding (half to even)."""
  return to_pixels(frames, 8)


def to_pixels(frames, bits: int = 8):
  """[-1, 1] -> uint8 (`bits` 8) or uint16 over its full range (deeper outputs: 10-bit video,
  16-bit PNG), rounding half to even."""
  top, dtype = (255.0, jnp.uint8) if bits == 8 else (65535.0, jnp.uint16)
  return jnp.round((jnp.clip(frames, -1.0, 1.0) * 0.5 + 0.5) * top).astype(dtype)


def latent_shape(vae: VideoAutoencoder, lq_shape) -> tuple[int, ...]:
  """The latent shape of an unpadded (B, T, H, W, 3) clip: that of the posterior noise and of
  the initial noise."""
  cfg = vae.cfg
  b, t, h, w, _ = lq_shape
  return (b, cfg.latent_frames(preprocess.padded_length(t, cfg.temporal_factor)),
          h // cfg.spatial_factor, w // cfg.spatial_factor, cfg.latent_channels)


def restore_clip(dit: NaDiT, vae: VideoAutoencoder, lq_bthwc, txt_blc, eps, noise,
                 options: RestoreOptions, bits: int = 8):
  """Unpadded pre-processed clip (B, T, H, W, 3) in [-1, 1] -> restored (B, T, H, W, 3) uint8
  (uint16 for `bits` > 8)."""
  padded = jax.vmap(lambda v: preprocess.pad_frames(v, vae.cfg.temporal_factor))(lq_bthwc)
  lq_latent = encode_lq(vae, padded, eps, options)
  x0 = predict_x0(dit, noise, lq_latent, txt_blc)
  return finish(decode_x0(vae, x0, options), lq_bthwc, options, bits)


def clip_noise(keys, shape):
  """Per-clip keys (B,) -> (posterior noise, initial noise), each (B, *shape) float32: clip b's
  from keys[b] alone."""
  return jax.vmap(lambda key: tuple(
      jax.random.normal(k, shape, jnp.float32) for k in jax.random.split(key)))(keys)


def _vae_part(path, _) -> bool:
  """True for the variables of the VAE's encode side (encoder and quant conv)."""
  return path[0] in ("encoder", "quant_conv")


# Program options each stage's function does not read: left out of its programs' descriptions,
# so options differing only there share the stage's program (the memory planner's candidates
# compile the DiT once, not once per VAE tile and offload mode). Offload changes a program
# only through where its weights are, which its abstract arguments (memory kinds) say.
UNREAD_OPTIONS = dict(
    encode=("colorfix", "dit_weights", "decode_chunk", "offload"),
    dit=("colorfix", "encode_chunk", "decode_chunk", "tile", "tile_overlap", "size_mode",
         "offload"),
    decode=("dit_weights", "encode_chunk", "offload"),
)


@dataclasses.dataclass(frozen=True)
class StagePrograms:
  """The compiled programs of one raw clip shape: decode as (latent range, program) per chunk."""

  encode: jax.stages.Compiled
  dit: jax.stages.Compiled
  decode: tuple[tuple[tuple[int, int], jax.stages.Compiled], ...]


class Restorer:
  """Restoration of batches of raw clips as separate compiled stage programs (compiled once per
  clip shape), the output streamed chunk by chunk.

  raw clips (B, T, H, W, 3) uint8 (or float32 in [0, 255]) -> `encode`: pre-process to `size`
  (official resize, then /16 crop or reflect padding by `options.size_mode`), VAE encode ->
  `dit`: x0 latent -> `decode`, one program call per latent chunk (`decode_ranges`; with tiling
  the whole clip) carrying the VAE's causal caches: colour fix, to pixels, padding cropped off ->
  (B, n, h, w, 3) uint8 frames (uint16 for `bits` > 8; (h, w) = `size` when padded). The math is
  `restore_clip`'s. Each clip draws its posterior and initial noise from its own key, so results
  do not depend on how clips are batched or placed on devices.
  With a mesh, the batch is split over its "data" axis and frame width over "sequence".
  With `options.cache_dir`, each compiled stage program is kept there and later loaded untraced.
  `compiled`: compiled programs shared with other restorers (`restore.Session`): a restorer of
  the same models' shapes (memory estimates) compiles the programs this one then runs.
  """

  def __init__(self, dit: NaDiT, vae: VideoAutoencoder, txt_lc, options: RestoreOptions,
               size: tuple[int, int], mesh: jax.sharding.Mesh | None = None, bits: int = 8,
               compiled: dict | None = None):
    self.options, self.mesh = options, mesh
    self.store = executables.ExecutableStore(
        f"{options.cache_dir}/executables") if options.cache_dir else None
    self._programs = {}  # (raw shape, dtype) -> StagePrograms
    self._compiled = {} if compiled is None else compiled  # program description -> compiled
    self._description = (repr(dit.cfg), repr(vae.cfg), size, bits,
                         None if mesh is None else (dict(mesh.shape), mesh.device_ids.tolist()))
    if options.offload == "blocks":  # the DiT program streams its blocks from host memory
      dit = streaming.stream_blocks(dit, host_sharding(mesh))
    dit_graph, dit_state = nnx.split(dit)
    vae_graph, encode_state, decode_state = nnx.split(vae, _vae_part, ...)
    self.weights = StageWeights(dict(encode=encode_state, dit=(dit_state, txt_lc),
                                     decode=decode_state), options.offload, mesh)
    self.traces = {stage: 0 for stage in STAGES}  # traces of each stage's programs
    unused = jax.eval_shape(lambda: (encode_state, decode_state))  # the other stage's VAE half
    self._temporal_factor = vae.cfg.temporal_factor

    def constrain(x):
      """Clips over "data" and, where it divides, frame width over "sequence"."""
      if mesh is None:
        return x
      width = "sequence" if x.shape[3] % mesh.shape["sequence"] == 0 else None
      return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(
          mesh, jax.sharding.PartitionSpec("data", None, None, width, None)))

    def encode(encode_state, raw, keys):
      self.traces["encode"] += 1
      vae_ = nnx.merge(vae_graph, encode_state, unused[1])
      lq = constrain(jax.vmap(lambda clip: preprocess.preprocess(
          clip / 255.0, size, options.size_mode))(raw))
      eps, _ = clip_noise(keys, latent_shape(vae_, lq.shape)[1:])
      padded = jax.vmap(lambda v: preprocess.pad_frames(v, vae_.cfg.temporal_factor))(lq)
      return lq, constrain(encode_lq(vae_, padded, constrain(eps), options))

    def predict(dit_weights, lq_latent, keys):
      self.traces["dit"] += 1
      dit_state, txt = dit_weights
      _, noise = clip_noise(keys, lq_latent.shape[1:])
      txt_b = jnp.broadcast_to(txt, (lq_latent.shape[0], *txt.shape))
      return constrain(predict_x0(nnx.merge(dit_graph, dit_state), constrain(noise), lq_latent,
                                  txt_b))

    def decode(decode_state, x0, lq, caches, latent, pixel, *, latents, frames):
      self.traces["decode"] += 1
      vae_ = nnx.merge(vae_graph, unused[0], decode_state)
      x0_chunk = jax.lax.dynamic_slice_in_dim(x0, latent, latents, axis=1)
      lq_chunk = jax.lax.dynamic_slice_in_dim(lq, pixel, frames, axis=1)
      decoded, caches = decode_chunk(vae_, x0_chunk, caches, options)
      out = finish(decoded, lq_chunk, options, bits)
      if options.size_mode == "pad":
        top, left, _, _ = preprocess.pad_box(*size)
        out = out[:, :, top:top + size[0], left:left + size[1]]
      return out, jax.tree.map(constrain, caches)

    self._stage_fns = dict(encode=encode, dit=predict, decode=decode)

  def __call__(self, raw_bthwc, keys) -> jax.Array:
    """All restored frames (B, T, h, w, 3) of a batch of raw clips."""
    return jnp.concatenate(list(self.stream(raw_bthwc, keys)), axis=1)

  def stream(self, raw_bthwc, keys) -> Iterator[jax.Array]:
    """Restored frames of a batch of raw clips (B, T, H, W, 3), in order, as (B, n, h, w, 3)
    chunks: each yielded as soon as its decode is dispatched, its copy to the host started."""
    raw = jnp.asarray(raw_bthwc)
    if self.mesh is not None:
      raw = jax.device_put(raw, self._raw_sharding())
    programs = self.programs(raw.shape, raw.dtype)
    encode_weights = self.weights.on_device("encode")
    lq, lq_latent = programs.encode(encode_weights, raw, keys)
    dit_weights = self._in_turn("dit", encode_weights, lq_latent)
    x0 = programs.dit(dit_weights, lq_latent, keys)  # lq_latent donated
    decode_weights, caches = self._in_turn("decode", dit_weights, x0), None
    for (first, _), program in programs.decode:
      frames, caches = program(decode_weights, x0, lq, caches, np.int32(first),
                               np.int32(first_pixel(first, self._temporal_factor)))
      frames.copy_to_host_async()
      yield frames
    self._in_turn(None, decode_weights, frames)  # the next clip's weights come after this clip

  def _in_turn(self, stage: str | None, previous_weights, previous_outputs):
    """`stage`'s weights for its programs (None: none). With offloaded weights they are placed
    once the previous stage's outputs are computed and its weight copies freed: one stage's
    weights and work on the device at a time, as the memory plan counts them, and a stage's
    weights copied into the memory the previous stage left, not between its buffers (a stage's
    temporaries are one buffer, which needs one free range)."""
    if self.options.offload != "none":
      jax.block_until_ready(previous_outputs)
      self.weights.release(previous_weights)
    return None if stage is None else self.weights.on_device(stage)

  def _raw_sharding(self):
    return jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec("data"))

  def _compile(self, stage: str, fn, weights, *args, donate: tuple[int, ...] = ()
               ) -> jax.stages.Compiled:
    """`fn` compiled for abstract `args` after `stage`'s weights (`donate`: indices into `args`
    whose buffers the program may reuse for its outputs): once per process, and with a cache
    directory loaded from it (no tracing) when an earlier run compiled it."""
    read = {name: value for name, value in self.options.program_fields().items()
            if name not in UNREAD_OPTIONS[stage.split()[0]]}
    description = (self._description, read, stage, executables.abstract((weights, *args)),
                   donate)
    key = repr(description)
    if key not in self._compiled:
      lower = lambda: jax.jit(mesh_lib.traced_with_mesh(fn, self.mesh),
                              donate_argnums=tuple(1 + i for i in donate)).lower(weights, *args)
      self._compiled[key] = (lower().compile() if self.store is None
                             else self.store.get(description, lower))
    return self._compiled[key]

  def programs(self, raw_shape, raw_dtype=jnp.uint8) -> StagePrograms:
    """The compiled stage programs for raw clips of `raw_shape` and `raw_dtype`; each stage's
    arguments are the abstract outputs of the stages before it."""
    signature = (tuple(raw_shape), jnp.dtype(raw_dtype))
    if signature not in self._programs:
      encode = self._encode_program(raw_shape, raw_dtype)
      dit = self._dit_program(encode)
      self._programs[signature] = StagePrograms(encode, dit,
                                                self._decode_programs(raw_shape, encode, dit))
    return self._programs[signature]

  def _keys(self, batch: int) -> jax.ShapeDtypeStruct:
    """The abstract per-clip keys (batch,) of every stage."""
    return jax.eval_shape(lambda: jax.random.split(jax.random.key(0), batch))

  def _encode_program(self, raw_shape, raw_dtype) -> jax.stages.Compiled:
    sharding = None if self.mesh is None else self._raw_sharding()
    raw = jax.ShapeDtypeStruct(raw_shape, raw_dtype, sharding=sharding)
    return self._compile("encode", self._stage_fns["encode"], self.weights.abstract("encode"),
                         raw, self._keys(raw_shape[0]))

  def _dit_program(self, encode: jax.stages.Compiled) -> jax.stages.Compiled:
    _, lq_latent = encode.out_info
    # x0 takes the condition latent's buffer: the encode allocated it before the DiT's weights,
    # so x0 does not split the memory those weights and the DiT's temporaries free.
    return self._compile("dit", self._stage_fns["dit"], self.weights.abstract("dit"), lq_latent,
                         self._keys(lq_latent.shape[0]), donate=(0,))

  def _decode_programs(self, raw_shape, encode: jax.stages.Compiled,
                       dit: jax.stages.Compiled) -> tuple:
    """(latent range, program) per decode chunk (one for the whole clip with tiles)."""
    (lq, _), x0, tf = encode.out_info, dit.out_info, self._temporal_factor
    ranges = ((0, x0.shape[1]),) if self.options.tile is not None else decode_ranges(
        x0.shape[1], self.options.decode_chunk)
    scalar = jax.ShapeDtypeStruct((), jnp.int32)
    decode, caches = [], None
    for first, last in ranges:
      frames = min(first_pixel(last, tf), raw_shape[1]) - first_pixel(first, tf)
      fn = functools.partial(self._stage_fns["decode"], latents=last - first, frames=frames)
      program = self._compile(f"decode {last - first}:{frames}", fn,
                              self.weights.abstract("decode"), x0, lq, caches, scalar, scalar)
      decode.append(((first, last), program))
      caches = program.out_info[1]
    return tuple(decode)

  def memory(self, raw_shape, raw_dtype=jnp.uint8, stages=STAGES) -> list[StageMemory]:
    """XLA's memory estimate of each of `stages` for raw clips of `raw_shape` (compiles them
    and the stages before them, runs nothing); decode: the chunk program that needs the most;
    [] where the backend gives no estimate."""
    encode = self._encode_program(raw_shape, raw_dtype)
    dit = self._dit_program(encode) if set(stages) - {"encode"} else None
    decode = self._decode_programs(raw_shape, encode, dit) if "decode" in stages else ()
    compiled = dict(encode=[encode], dit=[dit], decode=[program for _, program in decode])
    # What `stream` keeps alive past the programs that take it: the raw clip, and the
    # pre-processed frames from the encode to the decode.
    raw = _device_bytes(jax.ShapeDtypeStruct(
        raw_shape, raw_dtype, sharding=None if self.mesh is None else self._raw_sharding()))
    held = dict(encode=0, dit=raw + _device_bytes(encode.out_info[0]), decode=raw)
    estimates = []
    for stage in stages:
      per_program = [self._stage_memory(stage, program, held[stage])
                     for program in compiled[stage]]
      if None in per_program:
        return []
      estimates.append(max(per_program, key=lambda m: m.total))
    return estimates

  def _stage_memory(self, stage: str, program: jax.stages.Compiled,
                    held: int) -> StageMemory | None:
    """XLA's memory analysis of one program of `stage`, with `held` bytes of other arrays;
    arguments on the device only (weights streamed from host memory are not, where the
    backend counts them with the device's)."""
    mem = program.memory_analysis()
    if mem is None:
      return None
    streamed = self.weights.streamed_bytes(stage)
    counted_on_device = max(0, streamed - mem.host_argument_size_in_bytes)
    # Outputs written into donated arguments take no memory of their own.
    return StageMemory(stage, mem.argument_size_in_bytes - counted_on_device,
                       mem.output_size_in_bytes - mem.alias_size_in_bytes, mem.temp_size_in_bytes,
                       self.weights.device_bytes(stage), self.weights.resident_bytes(stage),
                       held)


def _device_bytes(x: jax.ShapeDtypeStruct) -> int:
  """Bytes of one device's share of `x` (all of it without a sharding)."""
  shape = x.shape if x.sharding is None else x.sharding.shard_shape(x.shape)
  return math.prod(shape) * jnp.dtype(x.dtype).itemsize


def stage_memory(dit: NaDiT, vae: VideoAutoencoder, txt_lc, options: RestoreOptions,
                 size: tuple[int, int], raw_shape, raw_dtype=jnp.uint8,
                 mesh: jax.sharding.Mesh | None = None, bits: int = 8) -> list[StageMemory]:
  """Per-stage memory estimates (`Restorer.memory`) of restoring raw clips of `raw_shape`
  (B, T, H, W, 3) to `size` with `options`; the models may be abstract (`nnx.eval_shape`)."""
  return Restorer(dit, vae, txt_lc, options, size, mesh, bits).memory(raw_shape, raw_dtype)
