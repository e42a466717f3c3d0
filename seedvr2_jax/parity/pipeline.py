"""Pipeline parity: raw frames -> uint8 through the whole one-step restoration, with the
fixture's weights (dit3b + vae) and its stored posterior noise and initial noise, float32.

PASS when >= 99.9% of output bytes match exactly and none differs by more than 2 (with and
without the colour fix); intermediates are reported against their own tolerance.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from seedvr2_jax.convert import dit as dit_convert
from seedvr2_jax.convert import vae as vae_convert
from seedvr2_jax.convert.state_dict import open_state_dict
from seedvr2_jax.infer import one_step, preprocess
from seedvr2_jax.infer.options import RestoreOptions
from seedvr2_jax.models.dit import config as dit_config
from seedvr2_jax.models.vae import config as vae_config
from seedvr2_jax.parity.common import Check, Fixture, max_rel_err

REQUIRED = ("dit3b.safetensors", "vae.safetensors", "pipeline_io.npz")
TOL = 1e-4


def _byte_check(name: str, out: np.ndarray, ref: np.ndarray) -> Check:
  """Expressed as a Check: max |diff| / 255 against 2/255, and only if >= 99.9% exact."""
  diff = np.abs(out.astype(np.int32) - ref.astype(np.int32))
  exact = float(np.mean(diff == 0)) if out.shape == ref.shape else 0.0
  err = float(diff.max()) / 255.0 if exact >= 0.999 else float("inf")
  return Check(f"{name}(exact {exact:.4%})", err, 2 / 255)


def run(fixture: Fixture, component: str = "pipeline") -> list[Check]:
  io = fixture.arrays("pipeline_io.npz")
  conf = fixture.config
  dit = dit_convert.load_model(open_state_dict(fixture.file("dit3b.safetensors")),
                               dit_config.from_official(conf["dit3b"]["config"], "3b"))
  vcfg = vae_config.from_official(conf["vae"]["config"])
  vae = vae_convert.load_model(open_state_dict(fixture.file("vae.safetensors")), vcfg)
  p = conf.get("pipeline", {})
  opts = RestoreOptions(encode_chunk=None, decode_chunk=None)
  raw = jnp.asarray(np.moveaxis(io["raw_video"], 1, -1))  # (T, H, W, C) in [0, 1]
  size = preprocess.output_size(*raw.shape[1:3], resolution=(p.get("res_h", 720),
                                                             p.get("res_w", 1280)))
  to_cl = lambda x: jnp.asarray(np.moveaxis(x, 1, -1))  # (B, C, T, H, W) -> (B, T, H, W, C)
  eps, noise, txt = to_cl(io["vae_eps"]), jnp.asarray(io["noise"])[None], io["txt_pos"][None]
  with jax.default_matmul_precision("highest"):
    # Intermediates, stage by stage.
    pre = jax.jit(preprocess.preprocess, static_argnums=1)(raw, size)
    padded = preprocess.pad_frames(pre)[None]
    lq_latent = jax.jit(lambda x, e: one_step.encode_lq(vae, x, e, opts))(padded, eps)
    x0 = jax.jit(lambda n, c, t: one_step.predict_x0(dit, n, c, t))(noise, lq_latent, txt)
    decoded = jax.jit(lambda x: one_step.decode_x0(vae, x, opts))(x0)[0, :pre.shape[0]]
    # The output bytes through the product path (`restore_clip`).
    final = {mode: jax.jit(lambda lq, mode=mode: one_step.restore_clip(
        dit, vae, lq, txt, eps, noise, dataclasses.replace(opts, colorfix=mode)))(pre[None])[0]
             for mode in ("wavelet", "none")}
  velocity = (noise - x0)[0].reshape(-1, noise.shape[-1])
  return [
      Check("preprocessed", max_rel_err(pre, np.moveaxis(io["preprocessed"], 0, -1)), TOL),
      Check("lq_latent", max_rel_err(lq_latent[0], io["lq_latent"]), TOL),
      Check("dit_velocity", max_rel_err(velocity, io["dit_velocity"]), TOL),
      Check("decoded", max_rel_err(decoded, np.moveaxis(io["decoded"], 0, -1)[:pre.shape[0]]),
            TOL),
      _byte_check("final_uint8", np.asarray(final["wavelet"]), io["final_uint8"]),
      _byte_check("final_uint8_nocolorfix", np.asarray(final["none"]),
                  io["final_uint8_nocolorfix"]),
  ]
