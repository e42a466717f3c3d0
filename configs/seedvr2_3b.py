"""SeedVR2-3B DiT: the official `configs_3b/main.yaml` (`dit.model`) values, listed with comments
in `seedvr2_jax/models/dit/config.py: OFFICIAL["3b"]`, plus the numerics.

  seedvr2-jax params configs/seedvr2_3b.py        # 3,391,475,776 parameters
  seedvr2-jax params configs/seedvr2_3b.py:tiny   # the CPU-test size of the same code path

`tiny` matches the 3B-class config of the bundled parity fixture (tests/fixtures/parity_a).
"""

import ml_collections

from seedvr2_jax.models.dit.config import OFFICIAL, TINY


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(
      **OFFICIAL["3b"],
      param_dtype="float32",
      dtype="bfloat16",         # matmuls; norms, modulation, RoPE and residuals stay float32
      attention_backend="auto",  # splash on TPU, cuDNN flash attention on GPU, XLA elsewhere
      round_qkv_bf16=False,
      remat="none",             # training: "full" or "dots" rematerialises each block
      scan_layers=False,        # training: repeating blocks under lax.scan
  ))
  if arg == "tiny":
    config.model.update(dict(**TINY["3b"], dtype="float32"))
  elif arg:
    raise ValueError(f"unknown seedvr2_3b config variant {arg!r} (expected '' or 'tiny')")
  return config
