"""SeedVR2-7B DiT: the official `configs_7b/main.yaml` (`dit.model`) values, listed with comments
in `seedvr2_jax/models/dit/config.py: OFFICIAL["7b"]`, plus the numerics.

  seedvr2-jax params configs/seedvr2_7b.py        # 8,239,607,872 parameters
  seedvr2-jax params configs/seedvr2_7b.py:tiny   # the CPU-test size of the same code path

The 7B and 7B "sharp" checkpoints share this architecture. `tiny` matches the 7B-class config of
the bundled parity fixture (tests/fixtures/parity_a).
"""

import ml_collections

from seedvr2_jax.models.dit.config import OFFICIAL, TINY


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(
      **OFFICIAL["7b"],
      param_dtype="float32",
      dtype="bfloat16",
      attention_backend="auto",
      round_qkv_bf16=False,
      remat="none",             # training: "full" or "dots" rematerialises each block
      scan_layers=False,        # training: repeating blocks under lax.scan
  ))
  if arg == "tiny":
    config.model.update(dict(**TINY["7b"], dtype="float32"))
  elif arg:
    raise ValueError(f"unknown seedvr2_7b config variant {arg!r} (expected '' or 'tiny')")
  return config
