"""Run by test_train.py in a subprocess with 8 CPU devices: one training step of configs/tiny.py
(argument: its variant, "" for diffusion or "apt") on several mesh layouts versus one device;
prints, per layout, max |err| / max |ref| of the parameters, their EMA and Adam's first moment
(the gradient) after the step, and for APT the discriminator's parameters and first moment."""

import json
import os
import sys

import jax

jax.config.update("jax_num_cpu_devices", 8)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from seedvr2_jax import config_lib  # noqa: E402
from seedvr2_jax.train import data, loop  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUTS = {"one_device": {"data": 1}, "data2_fsdp4": {"data": 2, "fsdp": 4},
           "data2_sequence2_tensor2": {"data": 2, "sequence": 2, "tensor": 2}}


def step_params(variant: str, sizes: dict, devices) -> tuple[dict, float]:
  config = config_lib.load_config(os.path.join(ROOT, "configs", "tiny.py") + (
      f":{variant}" if variant else ""))
  # Two blocks (one separate-weights MM block, the video-only last block) halve the compile
  # time of the 4-block tiny model and keep every kind of parameter the sharding rules place.
  config.model.update(num_layers=2, mm_layers=1)
  config.mesh.update({"data": 1, **sizes})
  config.ema_decay = 0.9
  config.optim.warmup_steps = 0
  # Adam turns gradient components at float-noise level (~1e-9) into +-lr updates whose sign
  # depends on summation order; eps 1e-4 keeps the update continuous in the gradient, so the
  # comparison measures the sharded computation, not that amplification.
  config.optim.eps = config.d_optim.eps = 1e-4
  config.d_optim.warmup_steps = 0
  run = loop.build(config, devices)
  batches = data.SyntheticMoments(run.mesh, 8, (2, 8, 8))
  step_fn = loop.make_step_fn(run)
  state = run.state
  for _ in range(1):
    state, metrics = step_fn(state, next(batches), run.frozen)
  params = jax.tree.map(np.asarray, nnx.to_pure_dict(state.params))
  ema = jax.tree.map(np.asarray, nnx.to_pure_dict(state.ema))
  mu = jax.tree.map(np.asarray, nnx.to_pure_dict(state.opt_state[1][0].mu))
  out = {"params": params, "ema": ema, "adam_mu": mu}
  if variant == "apt":
    out["d_params"] = jax.tree.map(np.asarray, nnx.to_pure_dict(state.d_params))
    out["d_adam_mu"] = jax.tree.map(np.asarray, nnx.to_pure_dict(state.d_opt_state[1][0].mu))
  return out, float(metrics["grad_norm"])


def main(variant: str):
  results = {name: step_params(variant, sizes,
                               jax.devices()[:int(np.prod(list(sizes.values())))])
             for name, sizes in LAYOUTS.items()}
  ref, ref_grad_norm = results.pop("one_device")
  report = {}
  for name, (tree, grad_norm) in results.items():
    # Per state item (params, EMA, Adam first moment): max |err| / max |ref| over its arrays.
    errs = {item: max(float(np.abs(a - b).max()) for a, b in zip(
        jax.tree.leaves(tree[item]), jax.tree.leaves(ref[item]))) / max(
            float(np.abs(b).max()) for b in jax.tree.leaves(ref[item])) for item in ref}
    report[name] = {"max_rel_err": errs, "grad_norm": grad_norm,
                    "ref_grad_norm": ref_grad_norm}
  print(json.dumps(report))


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "")
