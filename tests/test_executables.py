"""Compiled restore programs kept on disk: a second Restorer loads them without tracing and
computes the same output; a program option is another program; an unreadable file is rebuilt."""

import dataclasses
import os

import jax
import numpy as np
import pytest
from flax import nnx

from seedvr2_jax.infer import executables, one_step
from seedvr2_jax.infer.options import RestoreOptions
from seedvr2_jax.models.dit import config as dit_config
from seedvr2_jax.models.dit.nadit import NaDiT
from seedvr2_jax.models.vae import config as vae_config
from seedvr2_jax.models.vae.autoencoder import VideoAutoencoder

SIZE = (16, 32)


@pytest.fixture(scope="module")
def models():
  """A two-block DiT and the tiny VAE (random weights): cheap to compile."""
  dit_cfg = dit_config.official("3b", **{**dit_config.TINY["3b"], "num_layers": 2,
                                         "mm_layers": 1})
  dit = NaDiT(dit_cfg, nnx.Rngs(0))
  vae = VideoAutoencoder(vae_config.VAEConfig(**vae_config.TINY), nnx.Rngs(1))
  txt = np.random.default_rng(2).standard_normal((3, dit_cfg.txt_in_dim), np.float32)
  return dit, vae, txt


@pytest.fixture
def traces(monkeypatch):
  """Counts traces of the restore program (each one calls `restore_clip` once)."""
  count = [0]
  original = one_step.restore_clip

  def counted(*args, **kwargs):
    count[0] += 1
    return original(*args, **kwargs)

  monkeypatch.setattr(one_step, "restore_clip", counted)
  return count


def _restore(models, options):
  restorer = one_step.Restorer(*models, options, SIZE)
  raw = np.random.default_rng(0).integers(0, 256, (1, 5, 24, 40, 3), np.uint8)
  keys = jax.random.split(jax.random.key(1), 1)
  return restorer, np.asarray(restorer(raw, keys))


def test_programs_are_loaded_untraced_keyed_by_what_they_depend_on(models, traces, tmp_path):
  options = RestoreOptions(cache_dir=str(tmp_path), resolution=SIZE)
  first, out_first = _restore(models, options)
  assert (first.store.compiled, first.store.loaded, traces[0]) == (1, 0, 1)
  (path,) = (tmp_path / "executables").iterdir()
  # Host-only options (seed, crf, overwrite) do not change the program: loaded, not traced.
  second, out_second = _restore(models, dataclasses.replace(options, seed=3, crf=30,
                                                             overwrite=True))
  assert (second.store.compiled, second.store.loaded, traces[0]) == (0, 1, 1)
  np.testing.assert_array_equal(out_second, out_first)
  # A program option is another program.
  other, _ = _restore(models, dataclasses.replace(options, colorfix="adain"))
  assert (other.store.compiled, other.store.loaded, traces[0]) == (1, 0, 2)
  assert len(os.listdir(tmp_path / "executables")) == 2
  # An unreadable file is compiled again and replaced.
  path.write_bytes(path.read_bytes()[:100])
  with pytest.warns(UserWarning, match="cannot load it"):
    again, out_again = _restore(models, options)
  assert (again.store.compiled, again.store.loaded, traces[0]) == (1, 0, 3)
  np.testing.assert_array_equal(out_again, out_first)
  assert path.stat().st_size > 100


def test_unwritable_store_warns_and_still_returns_the_program(tmp_path):
  blocker = tmp_path / "not_a_dir"
  blocker.write_text("")  # the store directory's place is taken by a file
  store = executables.ExecutableStore(str(blocker / "executables"))
  lowered = jax.jit(lambda x: x * 2 + 1).lower(jax.ShapeDtypeStruct((3,), np.float32))
  with pytest.warns(UserWarning, match="not kept"):
    compiled = store.get(("double plus one",), lambda: lowered)
  np.testing.assert_array_equal(compiled(np.arange(3, dtype=np.float32)), [1, 3, 5])
  assert store.compiled == 1
