"""Causal video VAE configuration (official `models/video_vae_v3/s8_c16_t4_inflation_sd3.yaml`).

The VAE maps pixels (T, H, W, 3) in [-1, 1] with T = 1 + 4n (or one image) to latents
(1 + n, H/8, W/8, 16). SCALING_FACTOR is where the official runner scales latents for the DiT:
`dit_latent = vae_latent * 0.9152 (+ shift 0)`, and the inverse before decoding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from seedvr2_jax.errors import ConfigError

SCALING_FACTOR = 0.9152
SHIFTING_FACTOR = 0.0
# A test-size VAE of the same code (the parity fixture's VAE).
TINY = dict(block_out_channels=(8, 16, 16, 16), norm_num_groups=4)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """Architecture plus numerics of the causal video VAE."""

  block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
  layers_per_block: int = 2  # encoder blocks; decoder blocks have one more
  latent_channels: int = 16
  in_channels: int = 3
  out_channels: int = 3
  norm_num_groups: int = 32
  temporal_scale_num: int = 2  # 2 -> 4x temporal compression
  time_receptive_field: str = "full"  # "full": resnet conv1 is 3x3x3; "half": 1x3x3
  mid_attention: bool = True
  use_quant_conv: bool = False
  use_post_quant_conv: bool = False
  scaling_factor: float = SCALING_FACTOR
  shifting_factor: float = SHIFTING_FACTOR
  param_dtype: str = "float32"
  dtype: str = "float32"

  def __post_init__(self):
    object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
    if self.time_receptive_field not in ("full", "half"):
      raise ConfigError(f"time_receptive_field must be 'full' or 'half', "
                        f"got {self.time_receptive_field!r}")
    if not 0 <= self.temporal_scale_num < len(self.block_out_channels):
      raise ConfigError(f"temporal_scale_num {self.temporal_scale_num} needs more blocks than "
                        f"{self.block_out_channels}")
    for c in self.block_out_channels:
      if c % self.norm_num_groups:
        raise ConfigError(f"channels {c} not divisible by norm_num_groups {self.norm_num_groups}")

  @property
  def spatial_factor(self) -> int:
    return 2 ** (len(self.block_out_channels) - 1)

  @property
  def temporal_factor(self) -> int:
    return 2 ** self.temporal_scale_num

  def latent_frames(self, frames: int) -> int:
    return (frames - 1) // self.temporal_factor + 1

  def encoder_temporal_down(self, block: int) -> bool:
    n = len(self.block_out_channels)
    return block != n - 1 and block >= n - self.temporal_scale_num - 1

  def decoder_temporal_up(self, block: int) -> bool:
    return block != len(self.block_out_channels) - 1 and block < self.temporal_scale_num


_OFFICIAL = {"act_fn", "block_out_channels", "down_block_types", "in_channels", "latent_channels",
             "layers_per_block", "norm_num_groups", "out_channels", "slicing_sample_min_size",
             "temporal_scale_num", "inflation_mode", "up_block_types",
             "spatial_downsample_factor", "temporal_downsample_factor", "use_quant_conv",
             "use_post_quant_conv", "freeze_encoder", "time_receptive_field", "attention",
             "slicing_up_num", "gradient_checkpoint", "scaling_factor", "force_upcast",
             "sample_size"}


def from_official(kwargs: Mapping[str, Any], **numerics) -> VAEConfig:
  """Config from the official VideoAutoencoderKLWrapper constructor kwargs."""
  unknown = sorted(set(kwargs) - _OFFICIAL)
  if unknown:
    raise ConfigError(f"unknown official VAE config key(s): {', '.join(unknown)}")
  k = dict(kwargs)
  if k.get("act_fn", "silu") != "silu":
    raise ConfigError(f"official VAE act_fn={k['act_fn']!r} is not supported (need 'silu')")
  for key, name in (("down_block_types", "DownEncoderBlock3D"),
                    ("up_block_types", "UpDecoderBlock3D")):
    if any(b != name for b in k.get(key, [name])):
      raise ConfigError(f"official VAE {key}={k[key]} is not supported (need {name})")
  cfg = VAEConfig(
      block_out_channels=k.get("block_out_channels", (64,)),
      layers_per_block=k.get("layers_per_block", 1), latent_channels=k.get("latent_channels", 4),
      in_channels=k.get("in_channels", 3), out_channels=k.get("out_channels", 3),
      norm_num_groups=k.get("norm_num_groups", 32),
      temporal_scale_num=k.get("temporal_scale_num", 2),
      time_receptive_field=k.get("time_receptive_field", "full"),
      mid_attention=k.get("attention", True), use_quant_conv=k.get("use_quant_conv", True),
      use_post_quant_conv=k.get("use_post_quant_conv", True), **numerics)
  for key, value in (("spatial_downsample_factor", cfg.spatial_factor),
                     ("temporal_downsample_factor", cfg.temporal_factor)):
    if key in k and k[key] != value:
      raise ConfigError(f"official VAE {key}={k[key]} disagrees with the blocks ({value})")
  return cfg


def from_config_dict(model: Mapping[str, Any], **overrides) -> VAEConfig:
  """Config from an ml_collections `config.vae` (keys = VAEConfig fields)."""
  fields = {f.name for f in dataclasses.fields(VAEConfig)}
  unknown = sorted(set(model) - fields)
  if unknown:
    raise ConfigError(f"unknown VAE config key(s): {', '.join(unknown)}")
  return VAEConfig(**{**dict(model), **overrides})
