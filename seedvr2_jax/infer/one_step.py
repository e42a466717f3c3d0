"""One-step SeedVR2 restoration of a clip, as the official inference script
(`projects/inference_seedvr2_3b.py`) runs it:

  lq (T, H, W, 3) in [-1, 1] -> pad to 4n+1 frames -> VAE encode, posterior sample, * 0.9152
  -> condition [lq latent | ones] -> DiT(noise | condition, text, t = 1000) = v
  -> x0 = noise - v -> VAE decode (x0 / 0.9152) -> trim -> colour fix against lq -> uint8.

Every function here is pure and traceable; `Restorer` jits `restore_clip` once per clip shape.
The VAE chunks and tiles and the colour fix come from `options.RestoreOptions`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from seedvr2_jax.diffusion import condition, schedule
from seedvr2_jax.infer import colorfix, executables, preprocess
from seedvr2_jax.infer.options import RestoreOptions
from seedvr2_jax.models.dit.nadit import NaDiT
from seedvr2_jax.models.vae import codec
from seedvr2_jax.models.vae.autoencoder import VideoAutoencoder
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
  frames = lq_bthwc.shape[1]
  padded = jax.vmap(lambda v: preprocess.pad_frames(v, vae.cfg.temporal_factor))(lq_bthwc)
  lq_latent = encode_lq(vae, padded, eps, options)
  x0 = predict_x0(dit, noise, lq_latent, txt_blc)
  decoded = decode_x0(vae, x0, options)[:, :frames]
  fixed = jax.vmap(lambda r, l: colorfix.color_fix(r, l, options.colorfix))(decoded, lq_bthwc)
  return to_pixels(fixed, bits)


class Restorer:
  """Jitted restoration of batches of raw clips (one compilation per clip shape).

  raw clips (B, T, H, W, 3) uint8 (or float32 in [0, 255]) -> pre-process to `size` (official
  resize, then /16 crop or reflect padding by `options.size_mode`) -> `restore_clip` ->
  (B, T, h, w, 3) uint8 (uint16 for `bits` > 8; padding cropped off, so (h, w) = `size` when
  padded). Each clip draws its posterior and initial noise from its own key, so results do not
  depend on how clips are batched or placed on devices.
  With a mesh, the batch is split over its "data" axis and frame width over "sequence".
  With `options.cache_dir`, each compiled program is kept there and later loaded untraced.
  """

  def __init__(self, dit: NaDiT, vae: VideoAutoencoder, txt_lc, options: RestoreOptions,
               size: tuple[int, int], mesh: jax.sharding.Mesh | None = None, bits: int = 8):
    self.options = options
    self.store = executables.ExecutableStore(
        f"{options.cache_dir}/executables") if options.cache_dir else None
    self._programs = {}  # raw clip shape -> compiled program
    self._description = (repr(dit.cfg), repr(vae.cfg), options.program_fields(), size, bits,
                         None if mesh is None else (dict(mesh.shape), mesh.device_ids.tolist()))
    dit_graph, self.dit_state = nnx.split(dit)
    vae_graph, self.vae_state = nnx.split(vae)
    self.txt = jnp.asarray(txt_lc)[None]
    self.mesh = mesh
    self.traces = 0  # times `run` was traced: once per input shape and dtype
    if mesh is not None:  # weights on every device (a loaded checkpoint sits on device 0)
      replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
      self.dit_state, self.vae_state, self.txt = jax.device_put(
          (self.dit_state, self.vae_state, self.txt), replicated)
    spec = jax.sharding.PartitionSpec("data", None, None, "sequence", None)

    def constrain(x):
      return x if mesh is None else jax.lax.with_sharding_constraint(
          x, jax.sharding.NamedSharding(mesh, spec))

    def run(dit_state, vae_state, raw, txt, keys):
      self.traces += 1
      vae_ = nnx.merge(vae_graph, vae_state)
      lq = constrain(jax.vmap(lambda clip: preprocess.preprocess(
          clip / 255.0, size, options.size_mode))(raw))
      shape = latent_shape(vae_, lq.shape)[1:]
      eps, noise = jax.vmap(lambda key: tuple(
          jax.random.normal(k, shape, jnp.float32) for k in jax.random.split(key)))(keys)
      txt_b = jnp.broadcast_to(txt, (lq.shape[0], *txt.shape[1:]))
      out = restore_clip(nnx.merge(dit_graph, dit_state), vae_, lq, txt_b, constrain(eps),
                         constrain(noise), options, bits)
      if options.size_mode == "crop":
        return out
      top, left, _, _ = preprocess.pad_box(*size)
      return out[:, :, top:top + size[0], left:left + size[1]]

    self._run = jax.jit(mesh_lib.traced_with_mesh(run, mesh))

  def __call__(self, raw_bthwc, keys) -> jax.Array:
    raw = jnp.asarray(raw_bthwc)
    if self.mesh is not None:
      raw = jax.device_put(raw, self._raw_sharding())
    return self.program(raw.shape, raw.dtype)(self.dit_state, self.vae_state, raw, self.txt,
                                              keys)

  def _raw_sharding(self):
    return jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec("data"))

  def _abstract_args(self, raw_shape, raw_dtype):
    sharding = None if self.mesh is None else self._raw_sharding()
    raw = jax.ShapeDtypeStruct(raw_shape, raw_dtype, sharding=sharding)
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), raw_shape[0]))
    return self.dit_state, self.vae_state, raw, self.txt, keys

  def lower(self, raw_shape, raw_dtype=jnp.uint8):
    """The lowered program for raw clips of `raw_shape` (for memory estimates)."""
    return self._run.lower(*self._abstract_args(raw_shape, raw_dtype))

  def program(self, raw_shape, raw_dtype=jnp.uint8):
    """The compiled program for raw clips of `raw_shape` and `raw_dtype`: compiled once per
    process, and with a cache directory loaded from it (no tracing) when an earlier run
    compiled it."""
    signature = (tuple(raw_shape), jnp.dtype(raw_dtype))
    if signature not in self._programs:
      if self.store is None:
        self._programs[signature] = self.lower(*signature).compile()
      else:
        description = (self._description, executables.abstract(self._abstract_args(*signature)))
        self._programs[signature] = self.store.get(description, lambda: self.lower(*signature))
    return self._programs[signature]
