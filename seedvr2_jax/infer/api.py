"""The Python API: load the models once, then restore arrays and files.

    from seedvr2_jax import Restorer

    restorer = Restorer.load(scale=2, clip_frames=21)  # checkpoint=None: the bundled toy model
    restored_thwc = restorer.restore_array(frames_thwc)  # uint8, or float in [0, 1]
    restorer.restore_file("in.mp4", "out.mp4")

Models, devices and compiled programs stay loaded across calls: a second input of the same
clip shape runs without tracing again. Keyword options are the fields of
`options.RestoreOptions`; calls may override any but those fixed at load (`LOAD_FIELDS`).
`seedvr2-jax restore` runs through this class (`batch.restore_jobs`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from seedvr2_jax.errors import ConfigError, InputError
from seedvr2_jax.infer import clips, preprocess, restore
from seedvr2_jax.infer.options import RestoreOptions

# Options that choose the models and devices: set by `load`, not per call.
LOAD_FIELDS = ("checkpoint", "dtype", "dit_weights", "sequence_parallel")
SIZE_FIELDS = ("resolution", "short_side", "scale")


class Restorer:
  """Loaded models, devices and compiled restorers, with default options for every call."""

  def __init__(self, session: restore.Session, options: RestoreOptions, log=print):
    self.session, self.options, self.log = session, options, log

  @classmethod
  def load(cls, checkpoint: str | None = None, *, log=print, models=None,
           **options) -> Restorer:
    """Loads `checkpoint` (a `convert` / `export-run` directory; None: the toy model), or uses
    `models` = (dit, vae, text embedding); `options` are RestoreOptions fields."""
    return cls.from_options(RestoreOptions(checkpoint=checkpoint, **options), log=log,
                            models=models)

  @classmethod
  def from_options(cls, options: RestoreOptions, log=print, models=None) -> Restorer:
    return cls(restore.load_session(options, log, models), options, log)

  @property
  def traces(self) -> int:
    """How often a restore stage program was traced (once per stage, clip shape and dtype)."""
    return sum(sum(r.traces.values()) for r in self.session.restorers.values())

  def with_options(self, **overrides) -> RestoreOptions:
    """This restorer's options with `overrides`; a size option replaces the default size."""
    fixed = sorted(set(overrides) & set(LOAD_FIELDS))
    if fixed:
      raise ConfigError(f"{', '.join(fixed)} are chosen at load time (Restorer.load)")
    if any(overrides.get(k) is not None for k in SIZE_FIELDS):
      overrides = {**{k: None for k in SIZE_FIELDS}, **overrides}
    return dataclasses.replace(self.options, **overrides)

  def restore_array(self, frames_thwc, **overrides) -> np.ndarray:
    """(T, H, W, 3) frames, uint8 or float in [0, 1] -> restored (T', h, w, 3) uint8
    (T' = min(T, max_frames)), as `restore_file` restores the same frames of a file."""
    frames = np.asarray(frames_thwc)
    if frames.ndim != 4 or frames.shape[-1] != 3 or not frames.shape[0]:
      raise InputError(f"expected frames (T, H, W, 3) with T >= 1, got shape {frames.shape}")
    if np.issubdtype(frames.dtype, np.floating):
      frames = frames.astype(np.float32) * 255.0
    elif frames.dtype != np.uint8:
      raise InputError(f"expected uint8 or float frames, got {frames.dtype}")
    options = self.with_options(**overrides)
    count = min(len(frames), options.max_frames or len(frames))
    size = preprocess.output_size(*frames.shape[1:3], resolution=options.resolution,
                                  short_side=options.short_side, scale=options.scale)
    options, _ = restore.fit_memory(self.session, options, count, frames.shape[1:3], size,
                                    log=self.log)
    plan = clips.plan_clips(count, options.clip_frames, options.clip_overlap)
    return np.stack(list(restore.restore_frames(self.session, iter(frames[:count]), plan, size,
                                                options)))

  def restore_file(self, input_path: str, output_path: str, progress_stream=None,
                   finish_with=None, **overrides) -> int:
    """Restores a video, image or frame folder into `output_path` (by its extension: a video,
    an image, or a PNG folder); returns the frames written. `finish_with`: runs the output's
    last step (`restore.restore_media`), e.g. on a thread while the next file starts."""
    return restore.restore_media(input_path, output_path, self.with_options(**overrides),
                                 log=self.log, progress_stream=progress_stream,
                                 session=self.session, finish_with=finish_with)
