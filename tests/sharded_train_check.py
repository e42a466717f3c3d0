"""Run by test_train.py in a subprocess with 8 CPU devices: one training step of configs/tiny.py
(argument: its variant, "" for diffusion or "apt") on several mesh layouts versus one device;
prints, per layout and state item, the worst array's max |err| / max |ref| after the step: the
parameters, their EMA, Adam's first moment (the gradient), and for APT the discriminator's
parameters and first moment; the arrays whose gradient is zero in exact arithmetic are left out
(their Adam update answers float noise) and their largest gradient reported instead."""

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
  config.batch_size, config.ema_decay = 8, 0.9  # 8: one sample per device on 8 devices
  config.optim.warmup_steps = 0
  # Adam turns gradient components at float-noise level (~1e-9) into +-lr updates whose sign
  # depends on summation order; eps 1e-4 keeps the update continuous in the gradient, so the
  # comparison measures the sharded computation, not that amplification.
  config.optim.eps = config.d_optim.eps = 1e-4
  config.d_optim.warmup_steps = 0
  run = loop.build(config, devices)
  batches = data.SyntheticMoments(run.mesh, config.batch_size, (2, 8, 8))
  step_fn = loop.make_step_fn(run)
  pure = lambda tree: jax.tree.map(np.asarray, nnx.to_pure_dict(tree))
  state, metrics = step_fn(run.state, next(batches), run.frozen)
  out = {"params": pure(state.params["dit"]), "ema": pure(state.ema["dit"]),
         "adam_mu": pure(state.opt_state["dit"][1][0].mu)}
  if variant == "apt":
    out["d_params"] = pure(state.params["discriminator"])
    out["d_adam_mu"] = pure(state.opt_state["discriminator"][1][0].mu)
  return out, float(metrics["grad_norm"])


# Arrays whose gradient is zero in exact arithmetic (float noise in practice), left out of the
# relative comparison: the discriminator logit's offset (RpGAN and R1/R2 see logit differences
# only) and the trunk's unused output head.
ZERO_GRADIENT = {"d_": ("out_norm/bias", "out_proj/bias", "trunk/vid_out/", "trunk/vid_out_ada/",
                        "trunk/vid_out_norm/")}


def _path(keys) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in keys)


def _leaves(tree) -> dict[str, np.ndarray]:
  return {_path(k): v for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def zero_gradient(prefix: str, path: str) -> bool:
  return any(path.startswith(p) for p in ZERO_GRADIENT.get(prefix, ()))


def per_leaf_errors(tree: dict, ref: dict, prefix: str) -> float:
  """max over arrays (but the zero-gradient ones) of max |err| / max |ref| of that array."""
  got = _leaves(tree)
  return max(float(np.abs(got[k] - b).max()) / max(float(np.abs(b).max()), 1e-30)
             for k, b in _leaves(ref).items() if not zero_gradient(prefix, k))


def zero_gradient_share(ref: dict, prefix: str) -> float | None:
  """Largest |gradient| of the zero-gradient arrays over the largest of all (None: none)."""
  mu = _leaves(ref.get(f"{prefix}adam_mu", {}))
  zero = [np.abs(v).max() for k, v in mu.items() if zero_gradient(prefix, k)]
  return float(max(zero) / max(np.abs(v).max() for v in mu.values())) if zero else None


def main(variant: str):
  results = {name: step_params(variant, sizes,
                               jax.devices()[:int(np.prod(list(sizes.values())))])
             for name, sizes in LAYOUTS.items()}
  ref, ref_grad_norm = results.pop("one_device")
  report = {}
  for name, (tree, grad_norm) in results.items():
    # Per state item, the worst array, each normalised by its own largest reference value, so
    # a small array cannot hide behind a large one.
    errs = {item: per_leaf_errors(tree[item], ref[item], "d_" if item[:2] == "d_" else "")
            for item in ref}
    report[name] = {"max_rel_err": errs, "grad_norm": grad_norm,
                    "ref_grad_norm": ref_grad_norm}
  report["zero_gradient_share"] = {p: zero_gradient_share(ref, p) for p in ("", "d_")
                                   if f"{p}adam_mu" in ref}
  print(json.dumps(report))


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "")
