"""Shared test helpers: the bundled parity fixture and small model builders."""

import json
import os
import tempfile

import numpy as np
import pytest

# Compiled programs of this test session (and its subprocesses) go to a fresh folder, not the
# user's cache: no run reads programs that an earlier one compiled.
os.environ["SEEDVR2_JAX_CACHE"] = tempfile.mkdtemp(prefix="seedvr2-jax-cache-")
# XLA's persistent cache, per test worker and inherited by subprocesses: a run that restarts
# (resume tests, second launches) loads the programs the first one compiled, as on a real host.
os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="seedvr2-jax-xla-")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
PARITY_A = os.path.join(FIXTURES, "parity_a")


@pytest.fixture(scope="session")
def parity_config():
  with open(os.path.join(PARITY_A, "config.json")) as f:
    return json.load(f)


@pytest.fixture(scope="session")
def dit_io():
  with np.load(os.path.join(PARITY_A, "dit3b_io.npz")) as data:
    return dict(data)


@pytest.fixture(scope="session")
def registry_wheel(tmp_path_factory):
  """`registry_wheel("pyiqa==0.1.16")` -> a zipfile.ZipFile of that wheel, fetched from the
  package registry with pip (CI has registry access; nothing is vendored)."""
  import subprocess
  import sys
  import zipfile
  folder = tmp_path_factory.mktemp("wheels")

  def fetch(requirement: str) -> zipfile.ZipFile:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary", ":all:", "-d", str(folder), requirement], check=True)
    name = requirement.split("==")[0].lower().replace("-", "_")
    wheel = [f for f in os.listdir(folder) if f.lower().startswith(name) and f.endswith(".whl")]
    assert len(wheel) == 1, wheel
    return zipfile.ZipFile(os.path.join(folder, wheel[0]))
  return fetch


@pytest.fixture(scope="session")
def restore_models():
  """(DiT, VAE, text embedding) for restore programs: a two-block DiT and the tiny VAE, random
  float32 weights (cheap to compile)."""
  from flax import nnx

  from seedvr2_jax.models.dit import config as dit_config
  from seedvr2_jax.models.dit.nadit import NaDiT
  from seedvr2_jax.models.vae import config as vae_config
  from seedvr2_jax.models.vae.autoencoder import VideoAutoencoder
  dit_cfg = dit_config.official("3b", **{**dit_config.TINY["3b"], "num_layers": 2,
                                         "mm_layers": 1})
  dit = NaDiT(dit_cfg, nnx.Rngs(0))
  vae = VideoAutoencoder(vae_config.VAEConfig(**vae_config.TINY), nnx.Rngs(1))
  txt = np.random.default_rng(2).standard_normal((3, dit_cfg.txt_in_dim), np.float32)
  return dit, vae, txt
