"""Run by test_train.py in a subprocess with 8 CPU devices: compiles the APT step of
configs/tiny.py:apt (2 blocks, `apt.d_sequential`, the path with the D step's stacked sample
groups and gradient accumulator) for one sample on one device and for 8 samples with fsdp=8;
prints XLA's FLOPs per device of each. Equal FLOPs: each device does its own sample's G and D
work; D work replicated over the devices would multiply the second by up to 8."""

import json
import os
import sys

import jax

jax.config.update("jax_num_cpu_devices", 8)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seedvr2_jax import config_lib  # noqa: E402
from seedvr2_jax.train import data, loop  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flops_per_device(devices: int) -> float:
  config = config_lib.load_config(os.path.join(ROOT, "configs", "tiny.py:apt"))
  config.model.update(num_layers=2, mm_layers=1)
  config.apt.d_sequential = True
  config.mesh.update(data=1, fsdp=devices)
  config.batch_size = devices
  run = loop.build(config, jax.devices()[:devices], abstract=True)
  batch = next(data.SyntheticMoments(run.mesh, devices, (2, 8, 8)))
  compiled = loop.make_step_fn(run).lower(run.state, batch, run.frozen).compile()
  return float(compiled.cost_analysis()["flops"])


if __name__ == "__main__":
  print(json.dumps({"one_device": flops_per_device(1), "fsdp8": flops_per_device(8)}))
