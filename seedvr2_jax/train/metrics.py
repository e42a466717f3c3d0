"""Training metrics to stdout, `WORKDIR/metrics.jsonl` (one JSON object per logged step, with
`step` and `loss`) and TensorBoard event files (tensorboardX: no TensorFlow needed). Only the
primary process writes."""

from __future__ import annotations

import json
import os
import sys

import numpy as np


class MetricsWriter:

  def __init__(self, workdir: str, primary: bool = True, stream=None):
    self.primary = primary
    self.stream = stream or sys.stdout
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if primary:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict) -> None:
    if not self.primary:
      return
    values = {k: float(np.asarray(v)) for k, v in scalars.items()}
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), **values}) + "\n")
    for name, value in values.items():
      self._tb.add_scalar(name, value, int(step))
    shown = " ".join(f"{k}={_fmt(v)}" for k, v in values.items())
    self.stream.write(f"step {step}: {shown}\n")
    self.stream.flush()

  def text(self, message: str) -> None:
    if self.primary:
      self.stream.write(message.rstrip("\n") + "\n")
      self.stream.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _fmt(value: float) -> str:
  return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
