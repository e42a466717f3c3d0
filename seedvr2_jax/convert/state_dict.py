"""Opens an official checkpoint file as a lazy mapping name -> np.ndarray."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from seedvr2_jax.errors import CheckpointError
from seedvr2_jax.convert.safetensors_io import SafetensorsFile
from seedvr2_jax.convert.torch_pickle import TorchCheckpoint

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def open_state_dict(path: str) -> Mapping[str, np.ndarray]:
  """`.safetensors` or a torch zip pickle (`.pth`, `.pt`, `.bin`, `.ckpt`); tensors load lazily.

  The returned mapping also has `shape(name)`, which reads no tensor data.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise CheckpointError(f"{path}: no such checkpoint file")
  if path.endswith(".safetensors"):
    return SafetensorsFile(path)
  if path.endswith(TORCH_SUFFIXES):
    return TorchCheckpoint(path)
  raise CheckpointError(f"{path}: unknown checkpoint format (expected .safetensors or "
                        f"{', '.join(TORCH_SUFFIXES)})")
