"""The restore options: every default of `seedvr2-jax restore` and of the library, in one place.

No JAX here: `cli.py` reads the defaults and choices when it builds its parser.
"""

from __future__ import annotations

import dataclasses
import os

from seedvr2_jax.errors import ConfigError

COLORFIX_MODES = ("wavelet", "adain", "none")
DTYPES = ("auto", "bfloat16", "float32")
# How the DiT blocks' Linear kernels are held: as loaded, or weight-only int8 / fp8 (e4m3)
# with per-output-channel scales, dequantised at use (`models/dit/quantize.py`).
DIT_WEIGHTS = ("native", "int8", "fp8")
# pad: reflect-pad to the model's multiple of 16 and crop back (exact output size); crop: the
# official centre crop to /16 (parity runs).
SIZE_MODES = ("pad", "crop")
# auto: a new clip at each detected scene cut (`infer/scenes.py`); none: clips ignore cuts.
SCENE_CUTS = ("none", "auto")
# The output area when no size option is given (the official 720p setting).
DEFAULT_RESOLUTION = (720, 1280)
# Where the weights of the stages (encode, DiT, decode) live: "none" keeps all on the device;
# "stages" keeps each stage's weights in pinned host memory and moves them in for that stage only;
# "blocks" as "stages", but the DiT program streams its scanned blocks from host memory one step
# at a time (`infer/weights.py`, `models/dit/streaming.py`).
OFFLOAD_MODES = ("none", "stages", "blocks")
# Compiled programs (`executables/`) and XLA's compilation cache (`xla/`).
DEFAULT_CACHE_DIR = os.environ.get("SEEDVR2_JAX_CACHE", "~/.cache/seedvr2-jax")
# Fields that do not change the compiled program (the rest are part of its key).
HOST_ONLY_FIELDS = ("checkpoint", "seed", "clip_frames", "clip_overlap", "max_frames",
                    "sequence_parallel", "crf", "overwrite", "dry_run", "cache_dir",
                    "scene_cuts", "codec", "pix_fmt", "png_bits", "audio", "resume",
                    "memory_budget")


@dataclasses.dataclass(frozen=True)
class RestoreOptions:
  """How `restore.restore_media` restores an input (and `one_step.Restorer` a clip).

  checkpoint: a `convert` / `export-run` directory; None: the bundled toy model.
  resolution (h, w) | short_side | scale: the output size, at most one (official area resize to
    h * w pixels, short side to N pixels, or both sides times S); none: DEFAULT_RESOLUTION.
  colorfix: one of COLORFIX_MODES ("wavelet" is the official one).
  seed: the posterior and initial noise of clip i are drawn from fold_in(key(seed), i).
  dtype: one of DTYPES; "auto" is bfloat16 on GPU and TPU, float32 elsewhere.
  dit_weights: one of DIT_WEIGHTS; "int8" and "fp8" hold the DiT blocks' kernels in a quarter
    (float32) or half (bfloat16) of the native bytes.
  clip_frames, clip_overlap: clips of this many frames cross-faded over at least this many
    (None: the whole video as one clip, as the official code); max_frames: only the first N.
  encode_chunk, decode_chunk: VAE chunks (frames, a multiple of 4 / latent frames; None: one
    pass); tile (h, w), tile_overlap: VAE spatial tiles in pixels (None: no tiling).
  sequence_parallel: devices that split each clip's frame width; the others run clips in
    parallel.
  crf: H.264 quality of a video output; overwrite: replace an existing output; dry_run: print
    the plan, restore nothing.
  cache_dir: compiled programs are kept under `cache_dir/executables` and loaded by later runs
    without tracing ("": none kept).
  size_mode: one of SIZE_MODES; scene_cuts: one of SCENE_CUTS.
  offload: one of OFFLOAD_MODES: "none" keeps every weight on the device; "stages" keeps the
    weights of the stages not running (encode, DiT, decode) in pinned host memory; "blocks" as
    "stages", and the DiT stage holds only its non-block weights and about one block (pair) on
    the device, streaming the blocks from host memory.
  memory_budget: GB of device memory a restore may use: `memory_plan` chooses clip length,
    VAE tiles and offload to fit it (InputError naming the smallest workable budget when none
    fits); None: the first device's free memory besides the models (its allocator's limit
    less what is in use when the session starts), no budget where the backend keeps no memory
    statistics (CPU).
  codec, pix_fmt: a video output's codec and pixel format (None: the container's defaults,
    `data/video_formats.py`); png_bits: 8 or 16 for PNG outputs; audio: carry the input's
    audio into a video output (False: drop it).
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
  dit_weights: str = "native"
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
  cache_dir: str = DEFAULT_CACHE_DIR
  size_mode: str = "pad"
  scene_cuts: str = "none"
  codec: str | None = None
  pix_fmt: str | None = None
  png_bits: int = 8
  audio: bool = True
  resume: bool = False
  offload: str = "none"
  memory_budget: float | None = None

  def __post_init__(self):
    sizes = sum(v is not None for v in (self.resolution, self.short_side, self.scale))
    if sizes > 1:
      raise ConfigError("give at most one of resolution, short_side and scale")
    if not sizes:
      object.__setattr__(self, "resolution", DEFAULT_RESOLUTION)
    if self.colorfix not in COLORFIX_MODES:
      raise ConfigError(f"unknown colour fix {self.colorfix!r}; expected one of "
                        f"{COLORFIX_MODES}")
    for name, value, choices in (("size mode", self.size_mode, SIZE_MODES),
                                 ("scene cut mode", self.scene_cuts, SCENE_CUTS),
                                 ("offload mode", self.offload, OFFLOAD_MODES),
                                 ("DiT weight format", self.dit_weights, DIT_WEIGHTS)):
      if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; expected one of {choices}")
    if self.dtype not in DTYPES:
      raise ConfigError(f"unknown dtype {self.dtype!r}; expected one of {DTYPES}")

  def program_fields(self) -> dict:
    """The fields a compiled restore program depends on."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if f.name not in HOST_ONLY_FIELDS}
