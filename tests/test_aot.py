"""Ahead-of-time compilation (train/aot.py, experiments/aot_compile.py) on host CPU devices: the
abstract run, the batch it compiles for, the report of a compiled sharded step, the collectives
parser, and the tool's errors. TPU targets need libtpu (the `tpu` extra), which CI does not
install; docs/scaling.md has their results."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from seedvr2_jax import config_lib
from seedvr2_jax.train import aot, loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "aot_compile.py")


def _config(spec: str, *overrides: str):
  return config_lib.load_with_overrides(os.path.join(ROOT, "configs", spec), list(overrides))


@pytest.mark.parametrize("spec, models", [
    ("train_7b.py", {"dit": 8_239_607_872}),
    ("train_3b.py:apt", {"dit": 3_391_475_776, "discriminator": None}),
    ("train_3b.py:distill", {"dit": 3_391_475_776})])
def test_abstract_run_has_the_shapes_and_shardings_of_the_real_one(spec, models):
  run = loop.build(_config(spec, "--config.mesh.fsdp=1"), jax.devices()[:1], abstract=True)
  leaves = jax.tree.leaves((run.state, run.frozen))
  assert all(isinstance(x, jax.ShapeDtypeStruct) and x.sharding is not None for x in leaves)
  counts = {name: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(p))
            for name, p in run.state.params.items()}
  assert set(counts) == set(models)
  # `seedvr2-jax params` counts (README); D = G's trunk + 3 query heads, more than G.
  assert all(counts[k] == v for k, v in models.items() if v)
  if "discriminator" in counts:
    assert counts["discriminator"] > counts["dit"]
  # AdamW: two moments per parameter; the EMA and the distillation teacher: one copy each.
  moments = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(run.state.opt_state["dit"])
                if x.ndim)
  assert moments == 2 * counts["dit"]
  if "teacher" in run.state.extras:
    assert jax.tree.map(lambda x: x.shape, run.state.extras["teacher"]) == \
        jax.tree.map(lambda x: x.shape, run.state.params["dit"])


def test_batch_is_the_largest_bucket_in_pixels_or_latents():
  config = _config("train_3b.py:apt", "--config.mesh.fsdp=1", "--config.batch_size=2")
  mesh = loop.mesh_lib.make_mesh({"data": 1}, None, jax.devices()[:1])
  pixels = aot.batch_shapes(config, None, mesh)
  assert {k: (v.shape, v.dtype) for k, v in pixels.items()} == {
      "hq": ((2, 21, 720, 1280, 3), np.uint8), "lq": ((2, 21, 180, 320, 3), np.uint8)}
  config.data.latents = "precomputed"
  latents = aot.batch_shapes(config, (5, 64, 96), mesh)
  assert latents["hq_moments"].shape == (2, 2, 8, 12, 32)  # 4n+1 frames -> n+1 latents


def test_collectives_are_counted_with_their_bytes():
  hlo = "\n".join([
      "  %ag = bf16[8,128]{1,0} all-gather(bf16[2,128]{1,0} %p), dimensions={0}",
      "  %ags = (f32[4]{0}, f32[16]{0}) all-gather-start(f32[4]{0} %q), dimensions={0}",
      "  %agd = f32[16]{0} all-gather-done((f32[4]{0}, f32[16]{0}) %ags)",
      "  %ar = (f32[10]{0}, bf16[6]{0}) all-reduce(f32[10]{0} %a, bf16[6]{0} %b), to_apply=%add",
      "  %rs = f32[3,5]{1,0} reduce-scatter(f32[12,5]{1,0} %c), dimensions={0}",
      "  %cp = u8[7]{0} collective-permute-start(u8[7]{0} %d), source_target_pairs={{0,1}}",
      "  %notes = f32[2]{0} add(f32[2]{0} %all-gather, f32[2]{0} %x)"])
  assert aot.collectives(hlo) == {
      "all-gather": {"count": 2, "bytes": 8 * 128 * 2 + 16 * 4},
      "reduce-scatter": {"count": 1, "bytes": 15 * 4},
      "all-reduce": {"count": 1, "bytes": 10 * 4 + 6 * 2},
      "all-to-all": {"count": 0, "bytes": 0},
      "collective-permute": {"count": 1, "bytes": 7}}


def _script(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                        timeout=600, cwd=ROOT)


def test_aot_compile_reports_a_tiny_fsdp_and_tensor_step_on_cpu_devices(tmp_path):
  out = tmp_path / "report.json"
  proc = _script("--topology", "cpu:8", "--config", "configs/tiny.py", "--clip", "5x32x32",
                 "--config.model.num_layers=2", "--config.model.mm_layers=1",
                 "--config.mesh.data=1", "--config.mesh.fsdp=4", "--config.mesh.tensor=2",
                 "--config.batch_size=4", "--config.data.latents=precomputed",
                 "--json", str(out))
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert lines[0] == "target cpu:8: 8 chips, 1 hosts; mesh data=1 fsdp=4 sequence=1 tensor=2"
  report = json.loads(out.read_text())
  assert report["batch"] == {"hq_moments": [4, 2, 4, 4, 32], "lq_moments": [4, 2, 4, 4, 32]}
  assert report["total_bytes"] == (report["argument_bytes"] + report["temp_bytes"]
                                   + report["output_bytes"] - report["alias_bytes"])
  assert report["argument_bytes"] > 0 and report["temp_bytes"] > 0
  assert report["model_flops_per_chip"] > 0 and report["hbm_bytes"] is None
  ops = report["collectives"]
  # FSDP: weights gathered and gradients reduced; tensor: partial sums of row-split matmuls.
  assert ops["all-gather"]["count"] > 0 and ops["all-gather"]["bytes"] > 0
  assert ops["reduce-scatter"]["count"] + ops["all-reduce"]["count"] > 0


@pytest.mark.parametrize("args, message", [
    (("--topology", "v9:2x2"), "expected VERSION:AxB[xC]"),
    (("--topology", "cpu:0"), "CPU devices"),
    (("--topology", "cpu:1", "--clip", "5x32"), "--clip: expected FxHxW"),
    (("--topology", "cpu:1", "--config.nope=1"), "nope")])
def test_aot_compile_rejects_bad_input_in_one_line(args, message):
  proc = _script("--config", "configs/tiny.py", *args)
  assert proc.returncode == 2
  assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
