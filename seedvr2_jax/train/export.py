"""A training run -> the inference checkpoint (`convert/bundle.py`) that `restore` loads and that
the next stage starts from (`init.checkpoint`): the trained model's EMA (or raw) parameters with
the rest of the run's models (`Objective.to_bundle`).

  seedvr2-jax export-run --config CONFIG[:ARG] --workdir W --out DIR [--step N] [--raw]
      [--config.FIELD=VALUE ...]   (the config and overrides the run was trained with)
"""

from __future__ import annotations

import os

import ml_collections

from seedvr2_jax.convert import bundle as bundle_lib
from seedvr2_jax.errors import CheckpointError
from seedvr2_jax.train import checkpoint, loop


def to_bundle(run, *, ema: bool = True) -> bundle_lib.Bundle:
  """The run's current models as a Bundle (EMA parameters where kept and `ema`)."""
  return run.objective.to_bundle(run.state, run.frozen, ema=ema)


def export_run(config: ml_collections.ConfigDict, workdir: str, out_dir: str, *,
               step: int | None = None, ema: bool = True, overwrite: bool = False,
               log=print) -> int:
  """Writes checkpoint `step` (default: the newest) of `workdir`, trained with `config`, as a
  bundle; returns the step."""
  if os.path.exists(out_dir) and not overwrite:
    raise CheckpointError(f"{out_dir} exists (pass --overwrite to replace it)")
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):  # Orbax would create it
    raise CheckpointError(f"{workdir}: no checkpoints folder (not a training workdir?)")
  ckpt = checkpoint.Checkpointer(workdir, keep=1, every=1, async_save=False)
  try:
    steps = ckpt.manager.all_steps()
    if not steps or (step is not None and step not in steps):
      raise CheckpointError(f"{workdir}: no checkpoint" + (f" at step {step} (have "
                            f"{sorted(steps)})" if steps else ""))
    step = max(steps) if step is None else step
    run = loop.build(config)
    abstract = checkpoint.abstract_with_shardings(run.state, run.state_sharding)
    run.state, _ = ckpt.restore(step, abstract)
  finally:
    ckpt.close()
  bundle_lib.save(to_bundle(run, ema=ema), os.path.abspath(out_dir), overwrite=overwrite)
  log(f"wrote {out_dir}: step {step} of {workdir} ({'EMA' if ema else 'raw'} parameters)")
  return step
