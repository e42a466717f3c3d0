"""The restore options: every default of `seedvr2-jax restore` and of the library, in one place.

No JAX here: `cli.py` reads the defaults and choices when it builds its parser.
"""

from __future__ import annotations

import dataclasses

from seedvr2_jax.errors import ConfigError

COLORFIX_MODES = ("wavelet", "adain", "none")
DTYPES = ("auto", "bfloat16", "float32")
# The output area when no size option is given (the official 720p setting).
DEFAULT_RESOLUTION = (720, 1280)


@dataclasses.dataclass(frozen=True)
class RestoreOptions:
  """How `restore.restore_media` restores an input (and `one_step.Restorer` a clip).

  checkpoint: a `convert` / `export-run` directory; None: the bundled toy model.
  resolution (h, w) | short_side | scale: the output size, at most one (official area resize to
    h * w pixels, short side to N pixels, or both sides times S); none: DEFAULT_RESOLUTION.
  colorfix: one of COLORFIX_MODES ("wavelet" is the official one).
  seed: the posterior and initial noise of clip i are drawn from fold_in(key(seed), i).
  dtype: one of DTYPES; "auto" is bfloat16 on GPU, float32 elsewhere.
  clip_frames, clip_overlap: clips of this many frames cross-faded over at least this many
    (None: the whole video as one clip, as the official code); max_frames: only the first N.
  encode_chunk, decode_chunk: VAE chunks (frames, a multiple of 4 / latent frames; None: one
    pass); tile (h, w), tile_overlap: VAE spatial tiles in pixels (None: no tiling).
  sequence_parallel: devices that split each clip's frame width; the others run clips in
    parallel.
  crf: H.264 quality of a video output; overwrite: replace an existing output; dry_run: print
    the plan, restore nothing.
  resume: continue the interrupted restore saved in the output's work directory
    (`parts.work_dir`: finished frames of a video of several clips) instead of refusing it.
  """

  checkpoint: str | None = None
  resolution: tuple[int, int] | None = None
  short_side: int | None = None
  scale: float | None = None
  colorfix: str = "wavelet"
  seed: int = 666
  dtype: str = "auto"
  clip_frames: int | None = None
  clip_overlap: int = 8
  max_frames: int | None = None
  encode_chunk: int | None = 4
  decode_chunk: int | None = 1
  tile: tuple[int, int] | None = None
  tile_overlap: int = 64
  sequence_parallel: int = 1
  crf: int = 18
  overwrite: bool = False
  dry_run: bool = False
  resume: bool = False

  def __post_init__(self):
    sizes = sum(v is not None for v in (self.resolution, self.short_side, self.scale))
    if sizes > 1:
      raise ConfigError("give at most one of resolution, short_side and scale")
    if not sizes:
      object.__setattr__(self, "resolution", DEFAULT_RESOLUTION)
    if self.colorfix not in COLORFIX_MODES:
      raise ConfigError(f"unknown colour fix {self.colorfix!r}; expected one of "
                        f"{COLORFIX_MODES}")
    if self.dtype not in DTYPES:
      raise ConfigError(f"unknown dtype {self.dtype!r}; expected one of {DTYPES}")
