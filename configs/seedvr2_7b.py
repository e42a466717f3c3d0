"""SeedVR2-7B DiT: every value of the official `configs_7b/main.yaml` (`dit.model`).

  seedvr2-jax params configs/seedvr2_7b.py        # 8,239,607,872 parameters
  seedvr2-jax params configs/seedvr2_7b.py:tiny   # the CPU-test size of the same code path

The 7B and 7B "sharp" checkpoints share this architecture. `tiny` matches the 7B-class config of
the bundled parity fixture (tests/fixtures/parity_a).
"""

import ml_collections

REGULAR, SHIFTED = "720pwin_by_size_bysize", "720pswin_by_size_bysize"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(
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
      window_method=(REGULAR, SHIFTED),
      rope_type="pixel3d",      # qk_rope: window-normalised positions, video only
      vid_out_norm=False,
      param_dtype="float32",
      dtype="bfloat16",
      attention_backend="auto",
      round_qkv_bf16=False,
  ))
  if arg == "tiny":
    config.model.update(dict(vid_dim=64, txt_in_dim=32, heads=2, head_dim=32, num_layers=2,
                             dtype="float32"))
  elif arg:
    raise ValueError(f"unknown seedvr2_7b config variant {arg!r} (expected '' or 'tiny')")
  return config
