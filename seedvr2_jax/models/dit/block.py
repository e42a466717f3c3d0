"""NaMMSRTransformerBlock: modulated attention and MLP on the video and text streams."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from seedvr2_jax.models.dit import layers
from seedvr2_jax.models.dit.config import NaDiTConfig
from seedvr2_jax.models.dit.window_attention import AttentionContext, NaSwinAttention
from seedvr2_jax.parallel.sharding import ACT_BATCH, ACT_EMBED, ACT_TOKENS, constrain


def residual_streams(x_vid, x_txt):
  """The streams (B, N, D), (B, L, D) placed as between blocks: samples over the batch axes,
  video tokens over "sequence", the width replicated (text tokens left to the compiler)."""
  return (constrain(x_vid, ACT_BATCH, ACT_TOKENS, ACT_EMBED),
          constrain(x_txt, ACT_BATCH, None, ACT_EMBED))


class NaMMSRTransformerBlock(nnx.Module):
  """x <- x + gate * attn(mod(norm(x))); x <- x + gate * mlp(mod(norm(x))), per stream.

  The residual streams are float32. In the 3B last block (`video_only`) text is only normalised
  before attention, its attention output is added ungated and it has no MLP.
  """

  def __init__(self, cfg: NaDiTConfig, layer: int, rngs: nnx.Rngs):
    vid_only = cfg.video_only(layer)
    self.attn = NaSwinAttention(cfg, layer, rngs)
    self.mlp = layers.MM(lambda: layers.make_mlp(cfg, rngs), cfg.shared(layer, "mlp"), vid_only)
    self.ada = layers.MM(lambda: layers.AdaSingle(cfg, ("attn", "mlp"), True, rngs),
                         cfg.shared(layer, "ada"), vid_only)
    self.eps = cfg.norm_eps
    self.dtype = jnp.dtype(cfg.dtype)

  def __call__(self, x_vid, x_txt, emb_bd23, ctx: AttentionContext):
    """x_vid (B, N, D), x_txt (B, L, D) float32; emb_bd23 (B, D, 2, 3) -> same shapes."""
    e_attn, e_mlp = emb_bd23[:, :, 0], emb_bd23[:, :, 1]
    ada_vid, ada_txt = self.ada.for_vid, self.ada.for_txt

    a_vid = ada_vid.modulate(layers.rms_norm(x_vid, self.eps), e_attn, "attn")
    a_txt = layers.rms_norm(x_txt, self.eps)
    if ada_txt is not None:
      a_txt = ada_txt.modulate(a_txt, e_attn, "attn")
    o_vid, o_txt = self.attn(a_vid.astype(self.dtype), a_txt.astype(self.dtype), ctx)
    x_vid = x_vid + ada_vid.gate(o_vid, e_attn, "attn")
    if ada_txt is None:
      # Official: text skips gate and MLP and the block returns txt_attn + txt_attn.
      x_txt = x_txt + o_txt.astype(jnp.float32)
      x_vid, x_txt = residual_streams(x_vid, x_txt)
      return residual_streams(self._mlp_residual(x_vid, ada_vid, self.mlp.for_vid, e_mlp),
                              x_txt + x_txt)
    x_txt = x_txt + ada_txt.gate(o_txt, e_attn, "attn")
    x_vid, x_txt = residual_streams(x_vid, x_txt)
    return residual_streams(self._mlp_residual(x_vid, ada_vid, self.mlp.for_vid, e_mlp),
                            self._mlp_residual(x_txt, ada_txt, self.mlp.for_txt, e_mlp))

  def _mlp_residual(self, x, ada, mlp, e_mlp):
    h = ada.modulate(layers.rms_norm(x, self.eps), e_mlp, "mlp").astype(self.dtype)
    return x + ada.gate(mlp(h), e_mlp, "mlp")
