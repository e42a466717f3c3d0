"""The APT / SeedVR2 discriminator: a NaDiT trunk plus cross-attention-only heads.

The trunk is a NaDiT of the generator's architecture initialised from the diffusion weights
(all parameters trainable). After each trunk block in `head_layers` (0-based) a head block pools
all video tokens of that block's output into one token with a single learnable query:

  a   = RMSNorm(query),  x = RMSNorm(video tokens (B, N, D))
  tok = query + proj_out(MHA(q = qk_norm(W_q a), k = qk_norm(W_k x), v = W_v x))  (heads x head_dim)
  tok = tok + MLP(RMSNorm(tok))                      (the trunk's MLP type)
  logit = Linear(LayerNorm(concat_heads(tok)))       one scalar per sample

RMS norms (with learnable weights) on both inputs and on q/k per head follow the trunk's own
normalisation: the trunk's residual stream is unnormalised and grows with depth, and the q/k
norms bound the attention logits of the single query. The heads take no timestep modulation;
the trunk is already timestep-conditioned.

Head layers: APT/SeedVR2 tap the 36-block 7B at blocks 16, 26, 36 (1-based). Other depths use
the same relative depths, round(num_layers * k / 36) for k in (16, 26, 36): the 32-block 3B
taps 14, 23, 32 (1-based), i.e. (13, 22, 31).

The trunk keeps the generator's output head (`vid_out`) and, with head layers before the last
block, the later blocks: they are unused and get zero gradients.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from seedvr2_jax.errors import ConfigError
from seedvr2_jax.models.dit import layers
from seedvr2_jax.models.dit.config import NaDiTConfig
from seedvr2_jax.models.dit.nadit import NaDiT
from seedvr2_jax.parallel.sharding import ACT_BATCH, ACT_EMBED, ACT_HEADS, ACT_TOKENS, constrain

# APT's taps of its 36-block model (1-based), the reference for other depths.
APT_LAYERS, APT_DEPTH = (16, 26, 36), 36
# Config fields a discriminator trunk may change relative to its generator.
NUMERICS = ("dtype", "attention_backend", "round_qkv_bf16", "remat", "remat_names")


def default_head_layers(cfg: NaDiTConfig) -> tuple[int, ...]:
  """0-based head blocks at APT's relative depths: 7B (15, 25, 35), 3B (13, 22, 31)."""
  taps = (max(1, round(cfg.num_layers * k / APT_DEPTH)) - 1 for k in APT_LAYERS)
  return tuple(sorted(set(taps)))


class QueryHead(nnx.Module):
  """Cross-attention-only block: one learnable query token attends to all video tokens."""

  def __init__(self, cfg: NaDiTConfig, rngs: nnx.Rngs):
    dim, inner = cfg.vid_dim, cfg.heads * cfg.head_dim
    query = jax.random.normal(rngs.params(), (dim,), jnp.float32)
    self.query = nnx.Param(query.astype(jnp.dtype(cfg.param_dtype)), out_sharding=(layers.EMBED,),
                           eager_sharding=False)
    self.norm_query = layers.RMSNorm(cfg, dim, layers.EMBED)
    self.norm_vid = layers.RMSNorm(cfg, dim, layers.EMBED)
    self.proj_q = layers.dense(cfg, dim, inner, (layers.EMBED, layers.HEADS), use_bias=False,
                               rngs=rngs)
    self.proj_kv = layers.dense(cfg, dim, 2 * inner, (layers.EMBED, layers.HEADS),
                                use_bias=False, rngs=rngs)
    self.norm_q = layers.RMSNorm(cfg, cfg.head_dim)
    self.norm_k = layers.RMSNorm(cfg, cfg.head_dim)
    self.proj_out = layers.dense(cfg, inner, dim, (layers.HEADS, layers.EMBED), rngs=rngs)
    self.norm_mlp = layers.RMSNorm(cfg, dim, layers.EMBED)
    self.mlp = layers.make_mlp(cfg, rngs)
    self.heads, self.head_dim = cfg.heads, cfg.head_dim
    self.dtype = jnp.dtype(cfg.dtype)

  def __call__(self, x_bnd: jnp.ndarray) -> jnp.ndarray:
    """Video tokens (B, N, D) -> pooled token (B, D) float32."""
    batch, tokens, _ = x_bnd.shape
    query_d = self.query[...].astype(jnp.float32)
    q_hd = self.proj_q(self.norm_query(query_d).astype(self.dtype))
    q_hd = self.norm_q(q_hd.reshape(self.heads, self.head_dim)).astype(self.dtype)
    kv = self.proj_kv(self.norm_vid(x_bnd).astype(self.dtype))
    kv = constrain(kv.reshape(batch, tokens, 2, self.heads, self.head_dim), ACT_BATCH,
                   ACT_TOKENS, None, ACT_HEADS, None)
    k_bnhd = self.norm_k(kv[:, :, 0]).astype(self.dtype)
    scores_bhn = jnp.einsum("hd,bnhd->bhn", q_hd, k_bnhd, preferred_element_type=jnp.float32)
    weights_bhn = jax.nn.softmax(scores_bhn / math.sqrt(self.head_dim), axis=-1)
    pooled_bhd = jnp.einsum("bhn,bnhd->bhd", weights_bhn.astype(self.dtype), kv[:, :, 1],
                            preferred_element_type=jnp.float32)
    pooled = self.proj_out(pooled_bhd.reshape(batch, -1).astype(self.dtype))
    token_bd = constrain(query_d[None] + pooled.astype(jnp.float32), ACT_BATCH, ACT_EMBED)
    hidden = self.mlp(self.norm_mlp(token_bd).astype(self.dtype))
    return constrain(token_bd + hidden.astype(jnp.float32), ACT_BATCH, ACT_EMBED)


class Discriminator(nnx.Module):
  """D(x_t, condition, text, t) -> one logit per sample, plus the trunk features it pooled."""

  def __init__(self, trunk: NaDiT, head_layers: Sequence[int] | None = None, *,
               rngs: nnx.Rngs):
    cfg = trunk.cfg
    head_layers = default_head_layers(cfg) if head_layers is None else tuple(head_layers)
    if (not head_layers or list(head_layers) != sorted(set(head_layers))
        or head_layers[0] < 0 or head_layers[-1] >= cfg.num_layers):
      raise ConfigError(f"discriminator head_layers must be increasing block indices in "
                        f"[0, {cfg.num_layers}), got {head_layers}")
    width = len(head_layers) * cfg.vid_dim
    self.trunk = trunk
    self.head_layers = head_layers
    self.heads = nnx.List([QueryHead(cfg, rngs) for _ in head_layers])
    self.out_norm = nnx.LayerNorm(
        width, epsilon=cfg.norm_eps, dtype=jnp.float32, param_dtype=jnp.dtype(cfg.param_dtype),
        scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), (layers.EMBED,),
                                         eager_sharding=False),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (layers.EMBED,),
                                        eager_sharding=False), rngs=rngs)
    self.out_proj = layers.dense(cfg, width, 1, (layers.EMBED, None), rngs=rngs)

  @classmethod
  def from_generator(cls, generator: NaDiT, head_layers: Sequence[int] | None = None, *,
                     rngs: nnx.Rngs, **numerics) -> Discriminator:
    """A discriminator whose trunk is a copy of `generator` (fresh buffers, so donating either
    model's state never frees the other's). `numerics` may replace the config fields in
    `NUMERICS` (e.g. remat="full" for the discriminator only); heads use `rngs`."""
    unknown = sorted(set(numerics) - set(NUMERICS))
    if unknown:
      raise ConfigError(f"a discriminator trunk can only change {NUMERICS}, got {unknown}")
    cfg = dataclasses.replace(generator.cfg, **numerics)
    trunk = nnx.eval_shape(lambda: NaDiT(cfg, nnx.Rngs(0)))
    nnx.update(trunk, jax.tree.map(jnp.copy, nnx.state(generator)))
    return cls(trunk, head_layers, rngs=rngs)

  def __call__(self, sample_bthwc: jnp.ndarray, condition_bthwc: jnp.ndarray,
               txt_blc: jnp.ndarray, timestep_b: jnp.ndarray,
               txt_len_b: jnp.ndarray | None = None
               ) -> tuple[jnp.ndarray, list[jnp.ndarray]]:
    """Scores samples.

    Args:
      sample_bthwc: (B, T, H, W, 16) latent sample at timestep t (the clean sample noised to t).
      condition_bthwc: (B, T, H, W, 17) [LQ latent | ones].
      txt_blc: (B, L, txt_in_dim) text embeddings; txt_len_b: optional (B,) valid lengths.
      timestep_b: (B,) timesteps on the 0..1000 scale.
    Returns:
      logits (B,) float32 and the trunk's video states after each head layer, a list of
      (B, N, D) float32 (the feature-matching features, taken before the heads).
    """
    vid = jnp.concatenate([sample_bthwc, condition_bthwc.astype(sample_bthwc.dtype)], axis=-1)
    features, _, _ = self.trunk.hidden_states(vid, txt_blc, timestep_b, self.head_layers,
                                              txt_len_b)
    tokens = jnp.concatenate([head(f) for head, f in zip(self.heads, features)], axis=-1)
    logits = self.out_proj(self.out_norm(tokens).astype(self.out_proj.dtype))
    return logits[:, 0].astype(jnp.float32), features
