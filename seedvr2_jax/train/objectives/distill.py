"""Progressive distillation (SeedVR2 stage 1): rounds of `distill.steps_per_round` steps; round r
trains a student of teacher_steps / 2^(r+1) steps to match two Euler steps of its teacher
(losses/distillation.py), with teacher guidance `distill.first_round_guidance` in round 0, then 1.
The teacher is state (`extras["teacher"]`, frozen within a round); at each round's first step the
student becomes the teacher, decided from the step number alone, so a run resumed at a round
boundary does what an uninterrupted one does."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from seedvr2_jax.errors import ConfigError
from seedvr2_jax.losses import distillation
from seedvr2_jax.train import start
from seedvr2_jax.train.objectives.diffusion import DiTLossObjective


def distill_round(config: ml_collections.ConfigDict, step: int) -> tuple[int, int, float]:
  """(round index, student steps, teacher guidance) of step `step`."""
  d = config.distill
  r = min(step // d.steps_per_round, d.rounds - 1)
  student = d.teacher_steps // 2 ** (r + 1)
  if student < 1:
    raise ConfigError(f"distill: {d.rounds} rounds from {d.teacher_steps} teacher steps go "
                      f"below one student step")
  return r, student, d.first_round_guidance if r == 0 else 1.0


class Distillation(DiTLossObjective):

  name = "distill"

  def extras(self):
    copy = lambda params: jax.tree.map(jnp.copy, params)
    return ({"teacher": start.apply(copy, self.dit.params, abstract=self.abstract)},
            {"teacher": self.dit.params_sharding})

  def phase(self, step):
    return distill_round(self.config, step)

  def enter_phase(self, state, phase):
    teacher = jax.tree.map(jnp.copy, state.params["dit"])
    return (state.replace(extras={**state.extras, "teacher": teacher}),
            f"distillation round {phase[0]}: {phase[1]}-step student")

  def loss(self, dit, state, inputs, key, phase):
    _, student_steps, guidance = phase
    cfg = distillation.DistillConfig(student_steps, guidance,
                                     self.config.diffusion.resolution_shift)
    teacher = self.dit.merge(state.extras["teacher"])
    return distillation.distillation_loss(dit, teacher, inputs, key, cfg)

  def forwards(self, phase):
    # Student forward + backward, two teacher steps (each two forwards with guidance).
    return 3 + 2 * (2 if phase[2] != 1.0 else 1)
