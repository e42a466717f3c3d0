"""Official weight files of the learned no-reference metrics (MUSIQ, CLIP-IQA, DOVER), read as
arrays under their PyTorch state_dict names, from the folder the user gives (`--iqa-weights`).

Nothing is downloaded: a missing file is a CheckpointError naming the folder, the file names
looked for and where the file comes from.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from seedvr2_jax.convert.state_dict import open_state_dict
from seedvr2_jax.errors import CheckpointError

# Prefixes some official files put before the module's own names (DataParallel, wrappers).
PREFIXES = ("module.",)


def find(weights_dir: str | None, names: tuple[str, ...], metric: str, source: str) -> str:
  """The first of `weights_dir/name` that is a file."""
  if weights_dir:
    for name in names:
      path = os.path.join(weights_dir, name)
      if os.path.isfile(path):
        return path
  where = f"in {weights_dir}" if weights_dir else "(no --iqa-weights folder given)"
  raise CheckpointError(f"{metric} weights not found {where}: expected {' or '.join(names)} "
                        f"({source})")


def read(path: str, expected: dict[str, tuple[int, ...]]) -> dict[str, jnp.ndarray]:
  """{name: float32 array} of the `expected` names and shapes in the state_dict at `path`
  (names may carry a PREFIXES prefix); other entries are ignored."""
  state = open_state_dict(path)
  names = {}
  for key in state:
    bare = key
    for prefix in PREFIXES:
      bare = bare[len(prefix):] if bare.startswith(prefix) else bare
    names[bare] = key
  missing = [n for n in expected if n not in names]
  if missing:
    raise CheckpointError(f"{path}: {len(missing)} expected tensors missing, e.g. "
                          f"{', '.join(missing[:3])}")
  out = {}
  for name, shape in expected.items():
    value = np.asarray(state[names[name]])
    if value.shape != tuple(shape):
      raise CheckpointError(f"{path}: {name} has shape {value.shape}, expected {tuple(shape)}")
    out[name] = jnp.asarray(value, jnp.float32)
  return out
