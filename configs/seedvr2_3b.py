"""SeedVR2-3B DiT: every value of the official `configs_3b/main.yaml` (`dit.model`).

  seedvr2-jax params configs/seedvr2_3b.py        # 3,391,475,776 parameters
  seedvr2-jax params configs/seedvr2_3b.py:tiny   # the CPU-test size of the same code path

`tiny` matches the 3B-class config of the bundled parity fixture (tests/fixtures/parity_a).
"""

import ml_collections

REGULAR, SHIFTED = "720pwin_by_size_bysize", "720pswin_by_size_bysize"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(
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
      window_method=(REGULAR, SHIFTED),  # alternating: even layers regular, odd shifted
      rope_type="mmrope3d",
      rope_dim=128,
      vid_out_norm=True,
      param_dtype="float32",
      dtype="bfloat16",
      attention_backend="auto",
      round_qkv_bf16=False,
  ))
  if arg == "tiny":
    config.model.update(dict(vid_dim=64, txt_in_dim=32, heads=2, head_dim=32, num_layers=4,
                             mm_layers=2, rope_dim=32, dtype="float32"))
  elif arg:
    raise ValueError(f"unknown seedvr2_3b config variant {arg!r} (expected '' or 'tiny')")
  return config
