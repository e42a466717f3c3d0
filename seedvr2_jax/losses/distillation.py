"""Progressive distillation (Salimans & Ho) on the lerp schedule, as SeedVR2 stage 1.

A student with N/2 steps learns to match two Euler steps of its N-step teacher in one. The
student's grid is the official trailing grid of N/2 steps (resolution-shifted); the teacher's
N-step grid interleaves it, so between student points t > s lies one teacher point m. For x_t
drawn from q(x_t | x0) at a random student point t:
  teacher: x_m = x_t + (m - t)/T v_T(x_t, t);  x_s = x_m + (s - m)/T v_T(x_m, m)
  target velocity v* = (x_s - x_t) T / (s - t)   (one Euler step of the student lands on x_s)
  loss = mean (v_S(x_t, t) - v*)^2
The teacher may use classifier-free guidance (7.5 in the 64-step round, 1 afterwards).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from seedvr2_jax.diffusion import condition, schedule
from seedvr2_jax.losses.flow_matching import clip_shift


@dataclasses.dataclass(frozen=True)
class DistillConfig:
  """Student steps (teacher steps = 2 x), teacher guidance scale, resolution shift on/off."""

  student_steps: int
  guidance: float = 1.0
  resolution_shift: bool = True


def grids(student_steps: int, shift_by: float) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(student grid (N/2 + 1,), teacher grid (N + 1,)), both from T down to 0."""
  return (jnp.asarray(schedule.trailing_timesteps(student_steps, shift_by)),
          jnp.asarray(schedule.trailing_timesteps(2 * student_steps, shift_by)))


def teacher_two_steps(teacher, x_t, cond, batch: dict, t, m, s, guidance: float):
  """Two Euler steps t -> m -> s of the (guided) teacher; returns x_s."""

  def velocity(x, time):
    vid = condition.model_input(x, cond)
    pos = teacher(vid, batch["txt_pos"], time, batch["txt_pos_len"])
    if guidance == 1.0:
      return pos
    neg = teacher(vid, batch["txt_neg"], time, batch["txt_neg_len"])
    return schedule.guided(pos, neg, guidance)

  x_m = schedule.euler_step(x_t, velocity(x_t, t), t, m)
  return schedule.euler_step(x_m, velocity(x_m, m), m, s)


def distillation_loss(student, teacher, batch: dict, key: jax.Array, cfg: DistillConfig):
  """batch as `flow_matching.diffusion_loss`; returns (scalar loss, metrics dict)."""
  x0, lq = batch["hq"].astype(jnp.float32), batch["lq"].astype(jnp.float32)
  i_key, n_key = jax.random.split(key)
  shift_by = clip_shift(x0.shape) if cfg.resolution_shift else 1.0
  student_grid, teacher_grid = grids(cfg.student_steps, shift_by)
  i = jax.random.randint(i_key, (x0.shape[0],), 0, cfg.student_steps)
  t, m, s = student_grid[i], teacher_grid[2 * i + 1], student_grid[i + 1]
  noise = jax.random.normal(n_key, x0.shape, jnp.float32)
  x_t = schedule.add_noise(x0, noise, t)
  cond = condition.sr_condition(lq)
  x_s = jax.lax.stop_gradient(
      teacher_two_steps(teacher, x_t, cond, batch, t, m, s, cfg.guidance))
  target = (x_s - x_t) / ((s - t) / schedule.T).reshape(-1, 1, 1, 1, 1)
  v = student(condition.model_input(x_t, cond), batch["txt_pos"], t, batch["txt_pos_len"])
  loss = jnp.mean(jnp.square(v - target))
  return loss, {"loss": loss, "t_mean": jnp.mean(t)}
