"""The optimizer from the config: AdamW (SeedVR2: lr 1e-6, weight decay 0.01) or RMSProp (APT:
decay 0.9) with warm-up and a schedule, global-norm gradient clipping; weight decay only on
matrices (not norms, biases or modulation vectors). AdamW's first moment may be kept in
bfloat16 (`mu_dtype`: 2 bytes less state per parameter); its second moment stays float32 (optax
0.2.8 has no dtype option for it)."""

from __future__ import annotations

import jax
import ml_collections
import optax

from seedvr2_jax.errors import ConfigError

SCHEDULES = ("constant", "cosine", "linear")
OPTIMIZERS = ("adamw", "rmsprop")
MU_DTYPES = ("float32", "bfloat16")


def learning_rate(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up over `warmup_steps`, then constant, cosine or linear decay to `end_lr`."""
  if cfg.schedule not in SCHEDULES:
    raise ConfigError(f"unknown optim.schedule {cfg.schedule!r}; expected one of {SCHEDULES}")
  warmup = optax.linear_schedule(0.0, cfg.lr, max(cfg.warmup_steps, 1))
  rest = max(total_steps - cfg.warmup_steps, 1)
  after = {"constant": optax.constant_schedule(cfg.lr),
           "cosine": optax.cosine_decay_schedule(cfg.lr, rest, cfg.end_lr / max(cfg.lr, 1e-30)),
           "linear": optax.linear_schedule(cfg.lr, cfg.end_lr, rest)}[cfg.schedule]
  return optax.join_schedules([warmup, after], [cfg.warmup_steps])


def make(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  if cfg.name not in OPTIMIZERS:
    raise ConfigError(f"unknown optimizer {cfg.name!r}; expected one of {OPTIMIZERS}")
  if cfg.mu_dtype not in MU_DTYPES:
    raise ConfigError(f"unknown optimizer mu_dtype {cfg.mu_dtype!r}; expected one of {MU_DTYPES}")
  if cfg.name != "adamw" and cfg.mu_dtype != "float32":
    raise ConfigError(f"mu_dtype={cfg.mu_dtype} needs adamw ({cfg.name} has no first moment)")
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  lr = learning_rate(cfg, total_steps)
  if cfg.name == "adamw":
    update = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                         mask=decay_mask, mu_dtype=cfg.mu_dtype)
  else:
    update = optax.chain(optax.add_decayed_weights(cfg.weight_decay, decay_mask),
                         optax.rmsprop(lr, decay=cfg.rmsprop_decay, eps=cfg.eps))
  return optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm) if cfg.clip_norm else optax.identity(), update)
