"""seedvr2-jax: SeedVR2 one-step video restoration in JAX.

`from seedvr2_jax import Restorer` is the Python API (`infer/api.py`); it is imported on first
use, so importing the package loads no JAX backend.
"""


def __getattr__(name: str):
  if name == "Restorer":
    from seedvr2_jax.infer.api import Restorer
    return Restorer
  raise AttributeError(f"module 'seedvr2_jax' has no attribute {name!r}")
