"""Orbax checkpoints of a run: {train state, data iterator state, config} per step, saved
asynchronously, atomically (Orbax commits a step directory only when complete), keeping the
newest `keep`. Restores onto an abstract state that carries shardings, so every array is
read straight into its place on the mesh."""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp

from seedvr2_jax.errors import CheckpointError


class Checkpointer:

  def __init__(self, workdir: str, *, keep: int, every: int, async_save: bool = True):
    self.every = every
    options = ocp.CheckpointManagerOptions(max_to_keep=keep,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                         options=options, item_names=("state", "data", "config"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict | None, config_json: str, *,
           force: bool = False) -> bool:
    """Saves when `step` is a multiple of `every` (or `force`); returns whether it saved."""
    if not force and step % self.every:
      return False
    return self.manager.save(step, force=True, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state or {}),
        config=ocp.args.JsonSave(json.loads(config_json))))

  def restore(self, step: int, abstract_state):
    """(state, data iterator state) of `step`; `abstract_state` leaves are
    jax.ShapeDtypeStruct with shardings."""
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    except (ValueError, KeyError) as e:
      raise CheckpointError(f"{self.manager.directory}: step {step} does not match this run's "
                            f"model or optimizer (another config made it?): {e}") from None
    return restored.state, restored.data or None

  def reached_preemption(self, step: int) -> bool:
    """True on every process once a preemption notice reached any (multi-host runs)."""
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def abstract_with_shardings(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
