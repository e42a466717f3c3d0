"""NaDiT configuration: one frozen dataclass for both official code paths.

variant "3b" mirrors `models/dit_v2` (SeedVR2-3B): SwiGLU, blocks [0, mm_layers) with separate
video/text weights and shared weights after, integer MM-RoPE on video and text, output norm, a
video-only last block. variant "7b" mirrors `models/dit` (SeedVR2-7B): GELU-tanh MLP, separate
weights (unless shared_qkv / shared_mlp), window-normalised RoPE on video only, no output norm.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

from seedvr2_jax.errors import ConfigError
from seedvr2_jax.models.dit import rope as rope_lib
from seedvr2_jax.models.dit import window_plan
from seedvr2_jax.ops import attention as attention_lib

VARIANTS = ("3b", "7b")
MLP_TYPES = ("swiglu", "normal")
# Block activations tagged with `jax.ad_checkpoint.checkpoint_name`: the qkv projection
# (window_attention.py), the attention output before and after its output projection, the MLP's
# input projections and its output (layers.py).
CHECKPOINT_NAMES = ("qkv", "attention", "attn_out", "mlp_in", "mlp_out")
# `remat`: how every block is rematerialised in the backward pass (`NaDiTConfig.remat_policy`):
# "none" keeps every activation, "full" saves nothing and recomputes the block, "dots" keeps
# matmul outputs, "names" keeps the activations tagged with the names in `remat_names`.
REMAT_POLICIES = ("none", "full", "dots", "names")
_RMS_NORMS = ("fusedrms", "rms")


def _per_layer_windows(window, num_layers: int) -> tuple[tuple[int, int, int], ...]:
  """One (t, h, w) window count per layer from an int, one triple, or a per-layer list."""
  triple = lambda w: (w, w, w) if isinstance(w, int) else tuple(int(v) for v in w)
  if isinstance(window, int) or all(isinstance(w, int) for w in window):
    window = [window] * num_layers
  window = tuple(triple(w) for w in window)
  if len(window) != num_layers or any(len(w) != 3 for w in window):
    raise ConfigError(f"window must be one (t, h, w) triple or one per layer, got {window}")
  return window


def _per_layer_methods(method, num_layers: int) -> tuple[str, ...]:
  """One window method per layer from a name or a pattern that tiles the layers."""
  method = (method,) if isinstance(method, str) else tuple(method)
  if num_layers % len(method):
    raise ConfigError(f"window_method pattern {method} does not tile {num_layers} layers")
  for m in method:
    if m not in window_plan.WINDOW_METHODS:
      raise ConfigError(f"unknown window method {m!r}; expected one of "
                        f"{window_plan.WINDOW_METHODS}")
  return method * (num_layers // len(method))


@dataclasses.dataclass(frozen=True)
class NaDiTConfig:
  """Architecture plus numerics of a NaDiT. Per-layer fields are normalised to tuples."""

  variant: str
  vid_dim: int
  txt_in_dim: int
  heads: int
  head_dim: int
  num_layers: int
  mlp_type: str
  window: Any = (4, 3, 3)
  window_method: Any = (window_plan.REGULAR, window_plan.SHIFTED)
  vid_in_channels: int = 33
  vid_out_channels: int = 16
  expand_ratio: int = 4
  norm_eps: float = 1e-5
  qk_bias: bool = False
  patch_size: tuple[int, int, int] = (1, 2, 2)
  # 3B code path.
  mm_layers: Any = 0  # int (first k blocks separate) or one bool per block (True = separate)
  rope_dim: int | None = None
  vid_out_norm: bool = False
  # 7B code path.
  shared_qkv: bool = False
  shared_mlp: bool = False
  # Either "mmrope3d" (3B), "pixel3d" (7B, qk_rope) or None.
  rope_type: str | None = None
  # Numerics (not architecture).
  param_dtype: str = "float32"
  dtype: str = "float32"
  attention_backend: str = "auto"
  round_qkv_bf16: bool = False
  # Training: rematerialise each block's activations in the backward pass (`REMAT_POLICIES`);
  # with remat="names" the tagged activations in `remat_names` (`CHECKPOINT_NAMES`) are saved.
  remat: str = "none"
  remat_names: Any = CHECKPOINT_NAMES
  # Training: run repeating block pairs under lax.scan (`nadit.scan_segments`); same values.
  scan_layers: bool = False

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ConfigError(f"unknown DiT variant {self.variant!r}; expected one of {VARIANTS}")
    if self.mlp_type not in MLP_TYPES:
      raise ConfigError(f"unknown mlp_type {self.mlp_type!r}; expected one of {MLP_TYPES}")
    if self.attention_backend not in attention_lib.BACKENDS:
      raise ConfigError(f"unknown attention_backend {self.attention_backend!r}; "
                        f"expected one of {attention_lib.BACKENDS}")
    if self.remat not in REMAT_POLICIES:
      raise ConfigError(f"unknown remat policy {self.remat!r}; expected one of "
                        f"{REMAT_POLICIES}")
    remat_names = (self.remat_names,) if isinstance(self.remat_names, str) else tuple(
        self.remat_names)
    unknown = sorted(set(remat_names) - set(CHECKPOINT_NAMES))
    if unknown:
      raise ConfigError(f"unknown remat_names {unknown}; expected some of {CHECKPOINT_NAMES}")
    object.__setattr__(self, "remat_names", remat_names)
    if self.rope_type not in (None, *rope_lib.ROPE_KINDS):
      raise ConfigError(f"unknown rope_type {self.rope_type!r}")
    window = _per_layer_windows(self.window, self.num_layers)
    method = _per_layer_methods(self.window_method, self.num_layers)
    object.__setattr__(self, "window", window)
    object.__setattr__(self, "window_method", method)
    object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
    if not isinstance(self.mm_layers, int):
      if len(self.mm_layers) != self.num_layers:
        raise ConfigError(f"mm_layers needs one entry per layer, got {self.mm_layers}")
      object.__setattr__(self, "mm_layers", tuple(bool(m) for m in self.mm_layers))
    if self.rope_type == "mmrope3d" and self.rope_dim is None:
      object.__setattr__(self, "rope_dim", self.head_dim // 2)
    if self.rotated_channels > self.head_dim:
      raise ConfigError(f"RoPE rotates {self.rotated_channels} channels > head_dim {self.head_dim}")

  @property
  def remat_policy(self):
    """The jax.checkpoint policy of `remat` (None: no rematerialisation)."""
    policies = jax.checkpoint_policies
    return {"none": None, "full": policies.nothing_saveable,
            "dots": policies.dots_with_no_batch_dims_saveable,
            "names": policies.save_only_these_names(*self.remat_names)}[self.remat]

  # Derived sizes.
  @property
  def txt_dim(self) -> int:
    return self.vid_dim

  @property
  def emb_dim(self) -> int:
    return 6 * self.vid_dim

  @property
  def mlp_hidden(self) -> int:
    if self.mlp_type == "swiglu":
      hidden = int(2 * self.vid_dim * self.expand_ratio / 3)
      return 256 * ((hidden + 255) // 256)
    return self.vid_dim * self.expand_ratio

  @property
  def has_txt_in(self) -> bool:
    return bool(self.txt_in_dim) and self.txt_in_dim != self.txt_dim

  @property
  def rope_freqs(self):
    return None if self.rope_type is None else rope_lib.rope_freqs(
        self.rope_type, self.head_dim, self.rope_dim)

  @property
  def rotated_channels(self) -> int:
    return 0 if self.rope_type is None else 6 * len(self.rope_freqs)

  # Per-layer structure.
  def shared(self, layer: int, part: str) -> bool:
    """Whether `part` ("qkv", "qk_norm", "mlp", "ada") of block `layer` has one weight set."""
    if self.variant == "3b":
      if isinstance(self.mm_layers, int):
        return layer >= self.mm_layers
      return not self.mm_layers[layer]
    return {"qkv": self.shared_qkv, "mlp": self.shared_mlp}.get(part, False)

  def video_only(self, layer: int) -> bool:
    """The 3B last block has no text modulation, gate or MLP."""
    return self.variant == "3b" and layer == self.num_layers - 1


# Every architecture value of the official configs (`configs_{3b,7b}/main.yaml`, `dit.model`).
OFFICIAL = {
    "3b": dict(
        variant="3b",             # official models/dit_v2 code path
        vid_in_channels=33,       # [noise 16 | LQ latent 16 | mask 1]
        vid_out_channels=16,
        vid_dim=2560,             # txt_dim = vid_dim, emb_dim = 6 * vid_dim
        txt_in_dim=5120,
        heads=20,
        head_dim=128,
        expand_ratio=4,           # SwiGLU hidden 256 * ceil(int(2 * 2560 * 4 / 3) / 256) = 6912
        norm_eps=1e-5,
        qk_bias=False,
        patch_size=(1, 2, 2),
        num_layers=32,
        mm_layers=10,             # blocks 0-9 separate video/text weights, 10-31 shared
        mlp_type="swiglu",
        window=(4, 3, 3),         # number of windows (t, h, w) at 720p, every layer
        window_method=(window_plan.REGULAR, window_plan.SHIFTED),  # even regular, odd shifted
        rope_type="mmrope3d",
        rope_dim=128,
        vid_out_norm=True,
    ),
    "7b": dict(
        variant="7b",             # official models/dit code path
        vid_in_channels=33,
        vid_out_channels=16,
        vid_dim=3072,
        txt_in_dim=5120,
        heads=24,
        head_dim=128,
        expand_ratio=4,           # GELU-tanh MLP, hidden 4 * 3072 = 12288, with biases
        norm_eps=1e-5,
        qk_bias=False,
        patch_size=(1, 2, 2),
        num_layers=36,
        shared_qkv=False,
        shared_mlp=False,
        mlp_type="normal",
        window=(4, 3, 3),
        window_method=(window_plan.REGULAR, window_plan.SHIFTED),
        rope_type="pixel3d",      # qk_rope: window-normalised positions, video only
        vid_out_norm=False,
    ),
}


# Test-size models of the same code paths (the parity fixture's DiT configs).
TINY = {
    "3b": dict(vid_dim=64, txt_in_dim=32, heads=2, head_dim=32, num_layers=4, mm_layers=2,
               rope_dim=32),
    "7b": dict(vid_dim=64, txt_in_dim=32, heads=2, head_dim=32, num_layers=2),
}


def official(variant: str, **overrides) -> NaDiTConfig:
  """The official SeedVR2-3B or -7B architecture, with overrides (numerics, TINY sizes)."""
  if variant not in OFFICIAL:
    raise ConfigError(f"unknown DiT variant {variant!r}; expected one of {tuple(OFFICIAL)}")
  return NaDiTConfig(**{**OFFICIAL[variant], **overrides})


_OFFICIAL_3B = {"vid_in_channels", "vid_out_channels", "vid_dim", "vid_out_norm", "txt_in_dim",
                "txt_in_norm", "txt_dim", "emb_dim", "heads", "head_dim", "expand_ratio", "norm",
                "norm_eps", "ada", "qk_bias", "qk_norm", "patch_size", "num_layers", "mm_layers",
                "mlp_type", "msa_type", "block_type", "window", "window_method", "rope_type",
                "rope_dim", "patch_type", "gradient_checkpoint"}
_OFFICIAL_7B = {"vid_in_channels", "vid_out_channels", "vid_dim", "txt_in_dim", "txt_dim",
                "emb_dim", "heads", "head_dim", "expand_ratio", "norm", "norm_eps", "ada",
                "qk_bias", "qk_rope", "qk_norm", "patch_size", "num_layers", "shared_mlp",
                "shared_qkv", "mlp_type", "block_type", "window", "window_method",
                "gradient_checkpoint"}


def from_official(kwargs: Mapping[str, Any], variant: str, **numerics) -> NaDiTConfig:
  """Config from the official NaDiT constructor kwargs (`dit.model` of the official yaml)."""
  allowed = _OFFICIAL_3B if variant == "3b" else _OFFICIAL_7B
  unknown = sorted(set(kwargs) - allowed)
  if unknown:
    raise ConfigError(f"unknown official {variant} DiT config key(s): {', '.join(unknown)}")
  k = dict(kwargs)
  checks = [("norm", _RMS_NORMS), ("qk_norm", _RMS_NORMS), ("ada", ("single",))]
  for key, ok in checks:
    if k.get(key) not in ok:
      raise ConfigError(f"official DiT config {key}={k.get(key)!r} is not supported (need {ok})")
  blocks = k.get("block_type", "mmdit_sr")
  if any(b != "mmdit_sr" for b in ([blocks] if isinstance(blocks, str) else blocks)):
    raise ConfigError(f"official DiT block_type {blocks!r} is not supported (need 'mmdit_sr')")
  if k.get("txt_dim", k["vid_dim"]) != k["vid_dim"] or k["emb_dim"] != 6 * k["vid_dim"]:
    raise ConfigError("official DiT config needs txt_dim == vid_dim and emb_dim == 6 * vid_dim")
  patch = k.get("patch_size", (1, 2, 2))
  common = dict(
      variant=variant, vid_dim=k["vid_dim"], txt_in_dim=k["txt_in_dim"], heads=k["heads"],
      head_dim=k["head_dim"], num_layers=k["num_layers"], mlp_type=k.get("mlp_type", "normal"),
      window=k["window"], window_method=k["window_method"],
      vid_in_channels=k["vid_in_channels"], vid_out_channels=k["vid_out_channels"],
      expand_ratio=k["expand_ratio"], norm_eps=k["norm_eps"], qk_bias=k["qk_bias"],
      patch_size=(patch,) * 3 if isinstance(patch, int) else patch, **numerics)
  if variant == "3b":
    if k.get("vid_out_norm") not in (None, *_RMS_NORMS):
      raise ConfigError(f"official DiT vid_out_norm={k['vid_out_norm']!r} is not supported")
    return NaDiTConfig(**common, mm_layers=k["mm_layers"], rope_dim=k.get("rope_dim"),
                       vid_out_norm=k.get("vid_out_norm") is not None,
                       rope_type=k.get("rope_type", "rope3d"))
  return NaDiTConfig(**common, shared_qkv=k.get("shared_qkv", False),
                     shared_mlp=k.get("shared_mlp", False),
                     rope_type="pixel3d" if k["qk_rope"] else None)


def from_config_dict(model: Mapping[str, Any], **overrides) -> NaDiTConfig:
  """Config from an ml_collections `config.model` (keys = NaDiTConfig fields)."""
  fields = {f.name for f in dataclasses.fields(NaDiTConfig)}
  values = dict(model)
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ConfigError(f"unknown DiT config key(s): {', '.join(unknown)}")
  values.update(overrides)
  return NaDiTConfig(**values)
