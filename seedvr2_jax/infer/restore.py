"""`seedvr2-jax restore`: a video, image or frame folder in, the one-step restoration out.

Plan (sizes, clips, windows, memory) -> load models (a `Session`, reused across inputs) ->
stream frames through clips (`clips.stream_clips`), batched over devices -> write frames as they
are final (and save them in the work directory of `parts`, for `--resume`). Failures leave no
output behind; an existing output is only replaced with `options.overwrite`.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seedvr2_jax.convert import bundle as bundle_lib
from seedvr2_jax.convert import dit as dit_convert
from seedvr2_jax.convert import vae as vae_convert
from seedvr2_jax.data import video_formats, video_io
from seedvr2_jax.errors import InputError
from seedvr2_jax.infer import clips, memory_plan, one_step, parts, preprocess, scenes, weights
from seedvr2_jax.infer.options import RestoreOptions
from seedvr2_jax.models.dit import quantize, window_plan
from seedvr2_jax.models.dit.flops import token_grid
from seedvr2_jax.parallel import mesh as mesh_lib
from seedvr2_jax.utils import atomic, background

TOY_CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "assets", "toy")
NO_CHECKPOINT_NOTE = (
    "no --checkpoint given: using the bundled toy model (experiments/toy/README.md): a "
    "7.4M-parameter DiT and a 7M-parameter VAE of the SeedVR2 code, trained from scratch on two "
    "sample clips for 2x restoration of small degraded videos. For real restorations download "
    "the official SeedVR2 weights (huggingface.co/ByteDance-Seed/SeedVR2-3B or -7B: "
    "seedvr2_ema_3b.pth, ema_vae.pth, pos_emb.pt, neg_emb.pt) and run `seedvr2-jax convert` "
    "once, then pass --checkpoint DIR.")


def output_kind(path: str) -> str:
  ext = os.path.splitext(path)[1].lower()
  if not ext:
    return "frames"
  if ext in video_formats.CONTAINERS:
    return "video"
  if ext in video_io.IMAGE_EXTENSIONS:
    return "image"
  raise InputError(f"{path}: unknown output type (use .mp4/.mkv/.mov/.webm, an image extension, "
                   f"or a folder name without extension for PNG frames)")


def output_bits(path: str, kind: str, options: RestoreOptions) -> int:
  """Bits per sample of the output: the video format's, or `png_bits` for PNG frames and
  images; InputError for an option that does not apply to this output."""
  if kind != "video" and (options.codec or options.pix_fmt):
    raise InputError(f"{path}: --codec and --pix-fmt apply to video outputs")
  if options.png_bits != 8 and not (kind == "frames" or path.lower().endswith(".png")):
    raise InputError(f"{path}: --png-bits applies to PNG outputs (a folder or a .png image)")
  if kind == "video":
    return video_formats.video_format(path, options.codec, options.pix_fmt).bits
  if options.png_bits not in video_io.PNG_BITS:
    raise InputError(f"--png-bits must be 8 or 16, got {options.png_bits}")
  return options.png_bits


def even_video_size(size: tuple[int, int], path: str, options: RestoreOptions,
                    log) -> tuple[int, int]:
  """`size` rounded up to the multiples the output's pixel format needs (4:2:0 video: even
  sides), with a note when that changes it."""
  pix_fmt = video_formats.video_format(path, options.codec, options.pix_fmt).pix_fmt
  multiples = video_formats.size_multiples(pix_fmt)
  fitted = tuple(-(-s // m) * m for s, m in zip(size, multiples))
  if fitted != tuple(size):
    log(f"note: output {size[1]}x{size[0]} rounded up to {fitted[1]}x{fitted[0]} ({pix_fmt} "
        f"needs sides that are multiples of {multiples[1]}x{multiples[0]})")
  return fitted


def resolve_dtype(dtype: str) -> str:
  """A `RestoreOptions.dtype` -> the compute dtype: "auto" is bfloat16 on GPU and TPU."""
  if dtype != "auto":
    return dtype
  return "bfloat16" if jax.default_backend() in ("gpu", "tpu") else "float32"


def model_header(checkpoint: str | None, dtype: str, log) -> tuple[str, bundle_lib.Header]:
  """(checkpoint directory, its configs and text embedding): that of `checkpoint`, or of the
  bundled toy model without one."""
  if checkpoint is None:
    log(f"note: {NO_CHECKPOINT_NOTE}")
    checkpoint = TOY_CHECKPOINT
  return checkpoint, bundle_lib.load_header(checkpoint, param_dtype=dtype, dtype=dtype)


def load_models(checkpoint: str | None, dtype: str, log,
                header: bundle_lib.Header | None = None,
                sharding: jax.sharding.Sharding | None = None):
  """(DiT, VAE, positive text embedding) of a `convert` / `export-run` directory, or of the
  bundled toy model without one; `header`: the directory's `model_header`, when already read;
  `sharding`: where the DiT's and VAE's weights are read into (default: the default device)."""
  if header is None:
    checkpoint, header = model_header(checkpoint, dtype, log)
  start = time.perf_counter()
  bundle = bundle_lib.load(checkpoint, header=header, sharding=sharding)
  dit = nnx.merge(dit_convert.abstract_model(bundle.dit_cfg)[0], bundle.dit_state)
  vae = nnx.merge(vae_convert.abstract_model(bundle.vae_cfg)[0], bundle.vae_state)
  log(f"loaded SeedVR2-{bundle.dit_cfg.variant.upper()} from {checkpoint} "
      f"({bundle.dit_cfg.param_dtype}, {time.perf_counter() - start:.2f} s)")
  return dit, vae, bundle.pos_emb


def abstract_models(header: bundle_lib.Header):
  """The (DiT, VAE, text embedding) of `header` with `jax.ShapeDtypeStruct` leaves."""
  dit = nnx.merge(*dit_convert.abstract_model(header.dit_cfg))
  vae = nnx.merge(*vae_convert.abstract_model(header.vae_cfg))
  return dit, vae, abstract_model(header.pos_emb)


def device_mesh(sequence_parallel: int) -> jax.sharding.Mesh | None:
  """This process's devices: clips over "data", frame width over "sequence"
  (`sequence_parallel` devices per clip); None on one device."""
  devices = jax.local_devices()
  if len(devices) == 1:
    return None
  if len(devices) % sequence_parallel:
    raise InputError(f"--sequence-parallel {sequence_parallel} does not divide {len(devices)} "
                     f"devices")
  return mesh_lib.make_mesh({"data": -1, "sequence": sequence_parallel}, devices=devices)


class Progress:
  """One status line on stderr: frames done, frames/s, ETA."""

  def __init__(self, total: int, stream=None):
    self.total, self.stream = total, stream or sys.stderr
    self.start, self.done = time.perf_counter(), 0

  def update(self, n: int = 1) -> None:
    self.done += n
    elapsed = time.perf_counter() - self.start
    rate = self.done / elapsed if elapsed > 0 else 0.0
    eta = (self.total - self.done) / rate if rate else float("inf")
    self.stream.write(f"\rrestore: {self.done}/{self.total} frames | {rate:.2f} frames/s | "
                      f"ETA {eta:.0f} s ")
    if self.done == self.total:
      self.stream.write("\n")
    self.stream.flush()


def describe_plan(output_path: str, info: video_io.MediaInfo, frames: int, size, plan, dit, vae,
                  options: RestoreOptions, memory: list[str]) -> list[str]:
  """The dry run's lines: input, sizes, clips, latent and windows, then `memory` (the memory
  plan's lines)."""
  h, w = preprocess.model_size(size, options.size_mode)
  padded = preprocess.padded_length(plan.length, vae.cfg.temporal_factor)
  if options.size_mode == "crop":
    top, left, _, _ = preprocess.crop_box(*size)
    sizes = f"cropped to {w}x{h} (offset {left},{top}); output {w}x{h}"
  else:
    sizes = f"padded to {w}x{h} (reflect), cropped back; output {size[1]}x{size[0]}"
  latent = (vae.cfg.latent_frames(padded), h // vae.cfg.spatial_factor,
            w // vae.cfg.spatial_factor)
  grid = token_grid(dit.cfg, latent)
  lines = [
      f"input: {info.path} ({info.kind}) {info.width}x{info.height}, {info.frames} frames, "
      f"{float(info.fps):.3f} fps, audio: {'yes' if info.has_audio else 'no'}",
      f"frames to restore: {frames}; resized to {size[1]}x{size[0]}, {sizes}; "
      f"{output_path} ({output_kind(output_path)})",
      f"clips: {plan.count} of {plan.length} frames (padded to {padded}), starts "
      f"{list(plan.starts)}",
      f"latent {latent[0]}x{latent[1]}x{latent[2]}, DiT token grid {grid[0]}x{grid[1]}x{grid[2]}",
  ]
  for key in sorted(set(zip(dit.cfg.window, dit.cfg.window_method))):
    p = window_plan.window_plan(grid, *key)
    lines.append(f"windows {key[1]}: {p.num_windows} (tokens per window {p.lengths.min()}-"
                 f"{p.lengths.max()})")
  return lines + memory


def abstract_model(model):
  """`model` (an nnx module or an array) with `jax.ShapeDtypeStruct` leaves."""
  if not isinstance(model, nnx.Module):
    return jax.ShapeDtypeStruct(model.shape, model.dtype)
  graphdef, state = nnx.split(model)
  return nnx.merge(graphdef, jax.tree.map(abstract_model, state))


def free_device_bytes() -> int | None:
  """The first device's free memory (its allocator's limit less what is in use); None on a
  backend that keeps no memory statistics (CPU)."""
  stats = jax.devices()[0].memory_stats()
  if not stats or "bytes_limit" not in stats:
    return None
  return stats["bytes_limit"] - stats.get("bytes_in_use", 0)


class Session:
  """Models, devices and compiled restorers kept across inputs (`api.Restorer` holds one).

  models: (DiT, VAE, text embedding), or a future of them (`result()`) while their weights
  load in the background or until they are first needed; shapes: their abstract shapes where
  known before the weights (the checkpoint's configs), else taken from the loaded models;
  free_bytes: device memory free besides the models (the default memory budget).
  `estimators` are restorers of the models' shapes alone, for memory estimates and for compiling
  programs while the weights load: they place and copy no weights. All share `compiled`, so a
  restorer runs the programs its estimator compiled.
  """

  def __init__(self, models, mesh: jax.sharding.Mesh | None, shapes=None,
               free_bytes: int | None = None, weights_on_host: bool = False):
    if not hasattr(models, "result"):
      models = Deferred(lambda value=models: value)
    self._models, self.mesh, self._shapes, self.free_bytes = models, mesh, shapes, free_bytes
    self.weights_on_host = weights_on_host
    self.restorers: dict = {}
    self.estimators: dict = {}
    self.compiled: dict = {}

  @property
  def models(self) -> tuple:
    """(DiT, VAE, text embedding), waiting for their weights if they are still loading."""
    return self._models.result()

  @property
  def dit(self):
    return self.models[0]

  @property
  def vae(self):
    return self.models[1]

  @property
  def txt(self):
    return self.models[2]

  @property
  def shapes(self) -> tuple:
    """The abstract (DiT, VAE, text embedding)."""
    if self._shapes is None:
      self._shapes = tuple(map(abstract_model, self.models))
    return self._shapes

  @property
  def batch(self) -> int:
    """Clips restored at once (one per "data" device)."""
    return 1 if self.mesh is None else self.mesh.shape["data"]

  def restorer(self, size: tuple[int, int], options: RestoreOptions,
               bits: int = 8) -> one_step.Restorer:
    """The restorer of clips resized to `size` with outputs of `bits` (one per size, bits and
    program options): its compiled programs are reused by every later input of that size."""
    return self._cached(self.restorers, lambda: self.models, size, options, bits)

  def offload_weights(self) -> None:
    """Moves the models' weights to pinned host memory, so that the only device copies are the
    ones offloaded restorers move in for their stage, and forgets the restorers made from
    device-resident weights. Idempotent."""
    if self.weights_on_host:
      return
    loaded, mesh = self._models, self.mesh
    self._models = in_background(lambda: host_models(loaded.result(), mesh))
    self.restorers.clear()
    self.weights_on_host = True

  def estimator(self, size: tuple[int, int], options: RestoreOptions,
                bits: int = 8) -> one_step.Restorer:
    """`restorer` of the models' shapes: its `memory` and `programs` compile the programs
    `restorer` runs, placing nothing."""
    return self._cached(self.estimators, lambda: self.shapes, size, options, bits)

  def _cached(self, restorers: dict, models, size, options, bits) -> one_step.Restorer:
    """restorers[size, bits, program options], made from `models()` when missing."""
    key = (size, bits, tuple(options.program_fields().items()))
    if key not in restorers:
      restorers[key] = one_step.Restorer(*models(), options, size, self.mesh, bits,
                                         self.compiled)
    return restorers[key]


class Deferred:
  """`fn()`, computed when its `result()` is first asked for (a future that starts late)."""

  def __init__(self, fn: Callable[[], object]):
    self._fn, self._done = fn, None

  def result(self):
    if self._fn is not None:
      self._done, self._fn = self._fn(), None
    return self._done


def in_background(fn: Callable[[], object]) -> concurrent.futures.Future:
  """`fn()` running in a thread of its own."""
  executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="load-weights")
  future = executor.submit(fn)
  executor.shutdown(wait=False)
  return future


def host_models(models, mesh: jax.sharding.Mesh | None) -> tuple:
  """(DiT, VAE, text embedding) with the DiT's and VAE's weights in pinned host memory."""
  host = weights.host_sharding(mesh)

  def to_host(model):
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.device_put(state, host))

  dit, vae, txt = models
  return to_host(dit), to_host(vae), txt


def model_bytes(models) -> int:
  """Bytes of the weights of (DiT, VAE, text embedding)."""
  return weights.nbytes([nnx.state(m) if isinstance(m, nnx.Module) else m for m in models])


def load_session(options: RestoreOptions, log=print, models=None) -> Session:
  """The devices of `options.sequence_parallel` and the models of `options.checkpoint` (or the
  given (dit, vae, text embedding)), the DiT's block kernels as `options.dit_weights` says,
  the weights in host memory for an `options.offload` (and a checkpoint's native weights read
  straight into it when they exceed the memory budget). A checkpoint's weights load in a
  background thread: the session's shapes (read from the checkpoint's configs), and so its
  memory plans and programs, do not wait for them (with quantised DiT weights they do)."""
  mesh = device_mesh(options.sequence_parallel)
  log(f"devices: {jax.device_count()} ({1 if mesh is None else mesh.shape['data']} clip(s) at a "
      f"time, each on {1 if mesh is None else mesh.shape['sequence']} device(s))")
  free, native = free_device_bytes(), options.dit_weights == "native"
  on_host = options.offload != "none"

  def prepare(loaded, to_host: bool):
    dit, vae, txt = loaded
    if not native:
      dit = quantize.quantize_model(dit, options.dit_weights)
      log(f"DiT block kernels held as {options.dit_weights} (weight-only, dequantised at use)")
    return host_models((dit, vae, txt), mesh) if to_host else (dit, vae, txt)

  if models is not None:  # already loaded: their device bytes are free for the restore
    free = None if free is None else free + model_bytes(models)
    loading, shapes = Deferred(lambda: prepare(models, on_host)), None
  else:
    checkpoint, header = model_header(options.checkpoint, resolve_dtype(options.dtype), log)
    budget = budget_bytes(options, free)

    def load():
      # Weights the budget cannot hold are read straight into host memory (the plan offloads
      # them), not through a device that could not take them. Quantised weights are made on
      # the device.
      read_to_host = native and (on_host or (
          budget is not None and bundle_lib.weight_bytes(checkpoint, header) > budget))
      loaded = load_models(checkpoint, header.dit_cfg.param_dtype, log, header,
                           weights.host_sharding(mesh) if read_to_host else None)
      return prepare(loaded, on_host or read_to_host)

    # A dry run plans from the shapes alone: its weights load only if something asks for them.
    # Otherwise the load starts first: the shapes below take a moment for a 3B or 7B model.
    loading = Deferred(load) if options.dry_run and native else in_background(load)
    shapes = abstract_models(header) if native else None
  return Session(loading, mesh, shapes, free, weights_on_host=on_host)


def memory_budget(options: RestoreOptions, session: Session) -> int | None:
  """Device bytes a restore may use: `options.memory_budget` GB, else the device memory free
  besides the session's models (`Session.free_bytes`); None without either (a backend that
  keeps no memory statistics: CPU)."""
  return budget_bytes(options, session.free_bytes)


def budget_bytes(options: RestoreOptions, free_bytes: int | None) -> int | None:
  """`options.memory_budget` GB in bytes, else `free_bytes`."""
  if options.memory_budget is not None:
    return int(options.memory_budget * memory_plan.GB)
  return free_bytes


def memory_estimator(session: Session, size: tuple[int, int], bits: int,
                     raw_shape: Callable[[RestoreOptions], tuple]) -> memory_plan.Estimator:
  """XLA's estimate of a stage's memory (`one_step.Restorer.memory` of the session's models'
  shapes) for raw clips (B, T, H, W, 3) of `raw_shape(options)`."""
  def estimate(stage: str, options: RestoreOptions) -> memory_plan.StageMemory:
    found = session.estimator(size, options, bits).memory(raw_shape(options), stages=(stage,))
    if not found:
      raise memory_plan.NoEstimate(stage)
    return found[0]
  return estimate


def fit_memory(session: Session, options: RestoreOptions, frames: int, raw_hw: tuple[int, int],
               size: tuple[int, int], bits: int = 8, cuts: tuple[int, ...] = (),
               log=print) -> tuple[RestoreOptions, list[str]]:
  """`options` fitted (`memory_plan.plan`) to `memory_budget(options)` for restoring `frames`
  frames of `raw_hw` (H, W) to `size`, and the plan's lines (`Plan.describe`). No budget: the
  options as given, and only a dry run is planned (for its estimates). A changed plan is logged.
  InputError when no plan fits."""
  budget = memory_budget(options, session)
  if budget is None and not options.dry_run:
    return options, []
  length = lambda o: clips.plan_clips(frames, o.clip_frames, o.clip_overlap, cuts).length
  raw_shape = lambda o: (session.batch, length(o), *raw_hw, 3)
  estimate = memory_estimator(session, size, bits, raw_shape)
  try:
    plan = memory_plan.plan(options, length(options), size, budget, estimate)
  except memory_plan.NoEstimate:
    log("note: no memory estimates on this backend; the memory budget is not checked")
    return options, []
  lines = plan.describe()
  if plan.options.offload != "none" and not options.dry_run:
    session.offload_weights()
  if plan.options != options and not options.dry_run:
    log(lines[0])
  return plan.options, lines


def restore_frames(session: Session, frames: Iterable[np.ndarray], plan: clips.ClipPlan,
                   size: tuple[int, int], options: RestoreOptions,
                   first_clip: int = 0, bits: int = 8) -> Iterator[np.ndarray]:
  """Input frames (H, W, 3) (uint8, or float32 in [0, 255]) from `plan.starts[first_clip]` ->
  restored (h, w, 3) frames (uint8, or uint16 for `bits` > 8), streamed (`clips.stream_clips`):
  a frame no later clip overlaps is yielded as soon as its decode chunk is done."""
  restorer, batch = session.restorer(size, options, bits), session.batch
  key = jax.random.key(options.seed)

  def restore_batch(indices, clip_frames):
    n = len(indices)
    stacked = np.stack(clip_frames + [clip_frames[-1]] * (batch - n))
    keys = jnp.stack([jax.random.fold_in(key, i) for i in indices + [indices[-1]] * (batch - n)])
    return restorer.stream(stacked, keys)  # chunks of frames as they are decoded

  return clips.stream_clips(frames, plan, restore_batch, batch, first_clip)


def restore_media(input_path: str, output_path: str, options: RestoreOptions = RestoreOptions(),
                  log=print, progress_stream=None, models=None,
                  session: Session | None = None,
                  finish_with: Callable[[Callable[[], None]], object] | None = None) -> int:
  """Restores the video, image or frame folder `input_path` into `output_path` (a video, an
  image, or a folder of PNG frames, by its extension); returns the number of frames written.

  `session`: models and compiled restorers to reuse (`load_session`); else one is loaded from
  `models`, an already built (dit, vae, text embedding) (benchmarks), or `options.checkpoint`
  (the toy model without one). A video of several clips saves its final frames in a work
  directory as it goes (`parts`), which `options.resume` continues after an interruption.
  `finish_with`: runs the last step of a video or frame-folder output, once every frame is
  encoded (the encoder's flush, the mux, the rename into place, the work directory's removal),
  e.g. `executor.submit`, so that the caller's next input starts meanwhile; the output exists
  when that step has run. Default: the step runs before this returns.
  """
  kind = output_kind(output_path)
  if os.path.exists(output_path) and not options.overwrite:
    raise InputError(f"{output_path} exists (pass --overwrite to replace it)")
  info = video_io.probe(input_path)
  frames = min(info.frames, options.max_frames) if options.max_frames else info.frames
  if kind == "image" and frames != 1:
    raise InputError(f"{output_path}: an image output needs a one-frame input, got {frames} "
                     f"frames (write .mp4 or a frame folder)")
  size = preprocess.output_size(info.height, info.width, resolution=options.resolution,
                                short_side=options.short_side, scale=options.scale)
  bits = output_bits(output_path, kind, options)
  if kind == "video" and options.size_mode == "pad":
    size = even_video_size(size, output_path, options, log)
  cuts = ()
  if options.scene_cuts == "auto":  # a pre-pass decoding the input (docs/restore_io.md)
    start = time.perf_counter()
    cuts = tuple(scenes.find_cuts(itertools.islice(video_io.read_frames(info), frames)))
    log(f"scene cuts: {list(cuts) if cuts else 'none'} ({time.perf_counter() - start:.2f} s)")
  session = session or load_session(options, log, models)
  start, known = time.perf_counter(), len(session.compiled)
  options, memory_lines = fit_memory(session, options, frames, (info.height, info.width), size,
                                     bits, cuts, log)
  plan = clips.plan_clips(frames, options.clip_frames, options.clip_overlap, cuts)
  if options.dry_run:
    dit, vae, _ = session.shapes
    for line in describe_plan(output_path, info, frames, size, plan, dit, vae, options,
                              memory_lines):
      log(line)
    return 0
  # Compiled (or loaded from options.cache_dir) while the weights may still be loading.
  session.estimator(size, options, bits).programs(
      (session.batch, plan.length, info.height, info.width, 3))
  if len(session.compiled) > known:
    log(f"stage programs ready: {len(session.compiled) - known} new in "
        f"{time.perf_counter() - start:.2f} s (memory plan included)")
  progress = Progress(frames, progress_stream)
  if kind == "image":
    source = itertools.islice(video_io.read_frames(info), frames)
    video_io.write_image(output_path, next(restore_frames(session, source, plan, size, options,
                                                           bits=bits)))
    progress.update()
    return 1
  work = None
  if plan.count > 1:
    boundaries = [*plan.starts[1:], frames]
    work = parts.WorkDir.open(
        output_path, parts.manifest(input_path, frames, options, boundaries,
                                    jax.default_backend()),
        resume=options.resume, overwrite=options.overwrite)
    if work.finished:
      log(f"resuming: {work.finished} of {frames} frames saved in {work.path}")
      atomic.remove_stale_temporaries(output_path)
  finished = work.finished if work else 0
  restored = iter(())
  if finished < frames:
    first, drop = clips.resume_point(plan, finished)
    source = itertools.islice(video_io.read_frames(info), plan.starts[first], frames)
    restored = itertools.islice(restore_frames(session, source, plan, size, options, first,
                                               bits),
                                drop, None)
  audio = info.path if info.has_audio and kind == "video" and options.audio else None
  if info.has_audio and kind == "frames":
    log("note: the input's audio is not written (a PNG folder holds no audio)")
  writer = video_io.VideoWriter(output_path, info.fps, crf=options.crf, audio_from=audio,
                                overwrite=options.overwrite, codec=options.codec,
                                pix_fmt=options.pix_fmt, png_bits=options.png_bits)

  def consume(item):
    frame, is_new = item
    writer.write(frame)
    if is_new and work is not None:
      work.add(frame)

  with writer.discarded_on_error():
    with background.BackgroundConsumer(consume) as encoder:  # encode while the device works
      for item in itertools.chain(((f, False) for f in (work.saved() if work else ())),
                                  ((f, True) for f in restored)):
        encoder.put(item)
        progress.update()
  out_h, out_w = size if options.size_mode == "pad" else preprocess.model_size(size)
  audio_note = f", audio {writer.audio.codec}" if writer.audio is not None else ""

  def finish():
    with writer.discarded_on_error():
      writer.close()
    if work is not None:
      work.remove()
    log(f"wrote {output_path}: {writer.count} frames, {out_w}x{out_h}{audio_note}")

  (finish_with or (lambda step: step()))(finish)
  return writer.count
