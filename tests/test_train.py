"""Training: mesh and sharding rules, exact resume, distillation, non-finite stops, sharded
steps on 8 CPU devices, the `train` command on real frames."""

import collections
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from seedvr2_jax import config_lib
from seedvr2_jax.data import bucketing
from seedvr2_jax.diffusion import schedule
from seedvr2_jax.errors import ConfigError
from seedvr2_jax.losses import adversarial as adv
from seedvr2_jax.losses import distillation
from seedvr2_jax.parallel import mesh as mesh_lib
from seedvr2_jax.parallel import sharding
from seedvr2_jax.train import data, loop, start
from seedvr2_jax.train.objectives import apt, distill

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.py")
LATENT_THW = (2, 8, 8)


def tiny(arg: str = "", **overrides):
  config = config_lib.load_config(TINY + (f":{arg}" if arg else ""))
  config.update({"log_every": 2, "checkpoint_every": 4, **overrides})
  return config


def tiny_apt(**overrides):
  """configs/tiny.py:apt with a 2-block DiT (as tests/sharded_train_check.py): APT compiles G and
  D, and halving the blocks halves that time."""
  config = tiny("apt", **overrides)
  config.model.update(num_layers=2, mm_layers=1)
  return config


def synthetic(batch=2, seed=0, poison_at=None):
  def make(run):
    if poison_at is None:
      return data.SyntheticMoments(run.mesh, batch, LATENT_THW, seed=seed)
    return _Poisoned(run.mesh, batch, LATENT_THW, seed=seed, at=poison_at)
  return make


class _Terminating(data.SyntheticMoments):
  """Sends this process SIGTERM (a preemption) when batch `at` (0-based) is drawn."""

  def __init__(self, *args, at: int, **kwargs):
    super().__init__(*args, **kwargs)
    self.at = at

  def __next__(self):
    if self.index == self.at:
      os.kill(os.getpid(), signal.SIGTERM)
    return super().__next__()


class _Poisoned(data.SyntheticMoments):
  """Batch `at` (0-based) is NaN."""

  def __init__(self, *args, at: int, **kwargs):
    super().__init__(*args, **kwargs)
    self.at = at

  def __next__(self):
    index = self.index
    batch = super().__next__()
    return jax.tree.map(lambda x: x * np.nan, batch) if index == self.at else batch


def params_of(run):
  return jax.tree.map(np.asarray, nnx.to_pure_dict(run.state.params["dit"]))


def test_mesh_sizes_and_errors():
  assert mesh_lib.axis_sizes({"data": -1, "fsdp": 2}, 8) == (4, 2, 1, 1)
  assert mesh_lib.axis_sizes({"tensor": 2}, 2) == (1, 1, 1, 2)
  for sizes, message in (({"data": -1, "fsdp": -1}, "at most one -1"),
                         ({"data": 3}, "needs 3 devices"), ({"batch": 2}, "unknown mesh axis"),
                         ({"data": -1, "fsdp": 3}, "do not divide")):
    with pytest.raises(ConfigError, match=message):
      mesh_lib.axis_sizes(sizes, 8)


def test_sharding_rules_replicate_what_they_cannot_split():
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1, 1), mesh_lib.AXES)
  rules = dict(sharding.DEFAULT_RULES)
  # A size-1 axis never shards.
  assert sharding.mesh_spec(PartitionSpec("embed", "mlp"), (64, 128), rules, mesh) == \
      PartitionSpec(None, None)
  fake = type("FakeMesh", (), {"shape": {"data": 2, "fsdp": 4, "sequence": 1, "tensor": 2}})()
  assert sharding.mesh_spec(PartitionSpec("embed", "mlp"), (64, 128), rules, fake) == \
      PartitionSpec("fsdp", "tensor")
  assert sharding.mesh_spec(PartitionSpec("embed", "heads"), (6, 128), rules, fake) == \
      PartitionSpec(None, "tensor")  # 6 is not divisible by fsdp=4
  assert sharding.mesh_spec(PartitionSpec("embed", "embed"), (64, 64), rules, fake) == \
      PartitionSpec("fsdp", None)  # a mesh axis shards one dimension at most
  with pytest.raises(ConfigError, match="unknown mesh axes"):
    sharding.state_shardings({}, mesh, (("embed", "model"),))


def test_schedule_identities():
  key = jax.random.key(0)
  x0, noise = jax.random.normal(key, (2, 3, 4)), jax.random.normal(jax.random.key(1), (2, 3, 4))
  t = np.array([250.0, 900.0], np.float32)
  x_t = schedule.add_noise(x0, noise, t)
  v = schedule.velocity(x0, noise)
  np.testing.assert_allclose(schedule.x0_from_v(x_t, v, t), x0, atol=1e-6)
  # An Euler step along the exact velocity moves along the straight path.
  np.testing.assert_allclose(schedule.euler_step(x_t, v, t, t / 2),
                             schedule.add_noise(x0, noise, t / 2), atol=1e-6)
  np.testing.assert_allclose(schedule.trailing_timesteps(4), [1000, 750, 500, 250, 0])
  assert schedule.resolution_shift(37, 256, 256) == pytest.approx(1.0)
  assert schedule.resolution_shift(145, 720, 1280) == pytest.approx(5.0)
  assert schedule.resolution_shift(1, 1024, 1024) == pytest.approx(3.2)
  shifted = schedule.trailing_timesteps(4, 3.0)
  assert np.all(np.diff(shifted) < 0) and np.all(shifted[1:-1] > [750, 500, 250])


def saved(config, workdir, step):
  """(whole train state as numpy, data iterator position) of checkpoint `step` of a run."""
  from seedvr2_jax.train import checkpoint
  run = loop.build(config)
  ckpt = checkpoint.Checkpointer(str(workdir), keep=1, every=1)
  try:
    state, data_state = ckpt.restore(step, checkpoint.abstract_with_shardings(
        run.state, run.state_sharding))
  finally:
    ckpt.close()
  return jax.tree.map(np.asarray, state), data_state


def assert_same_checkpoint(config, workdir_a, workdir_b, step):
  """Every leaf of the state (parameters, EMA, optimizer states, key, ...) and the data
  position of checkpoint `step` are equal in both workdirs."""
  (state_a, data_a), (state_b, data_b) = (saved(config, w, step) for w in (workdir_a, workdir_b))
  assert jax.tree.structure(state_a) == jax.tree.structure(state_b)
  jax.tree.map(np.testing.assert_array_equal, state_a, state_b)
  assert data_a == data_b and data_a


def test_resume_continues_exactly(tmp_path):
  straight = loop.train(tiny(total_steps=8), str(tmp_path / "a"), synthetic())
  loop.train(tiny(total_steps=4), str(tmp_path / "b"), synthetic())
  resumed = loop.train(tiny(total_steps=8), str(tmp_path / "b"), synthetic())
  assert int(resumed.state.step) == 8
  jax.tree.map(np.testing.assert_array_equal, params_of(resumed), params_of(straight))
  assert_same_checkpoint(tiny(), tmp_path / "a", tmp_path / "b", 8)
  logged = [json.loads(line) for line in open(tmp_path / "b" / "metrics.jsonl")]
  assert [r["step"] for r in logged] == [2, 4, 6, 8] and all("loss" in r for r in logged)
  assert sorted(os.listdir(tmp_path / "b" / "checkpoints")) == ["4", "8"]


def test_sigterm_saves_and_a_resumed_run_equals_the_straight_one(tmp_path, capsys):
  loop.train(tiny(total_steps=8), str(tmp_path / "a"), synthetic())
  stopped = loop.train(tiny(total_steps=8), str(tmp_path / "b"),
                       lambda run: _Terminating(run.mesh, 2, LATENT_THW, at=2))
  assert int(stopped.state.step) == 3 and "stopping at step 3" in capsys.readouterr().out
  assert sorted(os.listdir(tmp_path / "b" / "checkpoints")) == ["3"]
  loop.train(tiny(total_steps=8), str(tmp_path / "b"), synthetic())
  assert_same_checkpoint(tiny(), tmp_path / "a", tmp_path / "b", 8)


def test_non_finite_loss_stops_with_the_last_good_state(tmp_path):
  with pytest.raises(loop.NonFiniteLoss, match="non-finite loss or gradient at step 3"):
    loop.train(tiny(total_steps=8), str(tmp_path), synthetic(poison_at=2))
  good = loop.train(tiny(total_steps=2), str(tmp_path / "clean"), synthetic())
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
  # Resuming from the saved state restores the parameters of the last good step.
  resumed = loop.build(tiny())
  from seedvr2_jax.train import checkpoint
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=1, every=1)
  state, _ = ckpt.restore(2, checkpoint.abstract_with_shardings(resumed.state,
                                                                resumed.state_sharding))
  ckpt.close()
  jax.tree.map(np.testing.assert_array_equal,
               jax.tree.map(np.asarray, nnx.to_pure_dict(state.params["dit"])), params_of(good))


def _distill_gap(run, params, batch, key, student_steps):
  """The distillation loss (student one step vs teacher two steps) on a fixed batch."""
  latent_batch = run.objective.prepare(run.frozen, batch, jax.random.key(7))
  student = run.objective.dit.merge(params)
  teacher = run.objective.dit.merge(run.state.extras["teacher"])
  cfg = distillation.DistillConfig(student_steps, 1.0, False)
  return float(distillation.distillation_loss(student, teacher, latent_batch, key, cfg)[0])


def test_distillation_round_moves_the_student_to_the_teacher(tmp_path):
  config = tiny("distill", total_steps=30, log_every=10, checkpoint_every=30)
  config.distill.update(teacher_steps=4, rounds=1, steps_per_round=30, first_round_guidance=1.0)
  config.diffusion.resolution_shift = False
  begin = loop.build(config)
  held_out = next(data.SyntheticMoments(begin.mesh, 4, LATENT_THW, seed=99))
  key = jax.random.key(3)
  before = _distill_gap(begin, begin.state.params["dit"], held_out, key, 2)
  end = loop.train(config, str(tmp_path), synthetic())
  after = _distill_gap(end, end.state.params["dit"], held_out, key, 2)
  jax.tree.map(np.testing.assert_array_equal,  # the teacher stays frozen within a round
               jax.tree.map(np.asarray, nnx.to_pure_dict(end.state.extras["teacher"])),
               jax.tree.map(np.asarray, nnx.to_pure_dict(begin.state.extras["teacher"])))
  assert after < 0.7 * before, (before, after)


def test_distillation_resumed_at_a_round_boundary_equals_the_straight_run(tmp_path):
  """The student becomes the teacher at the first step of a round, also when the run resumes
  exactly there (the checkpoint holds the previous round's teacher)."""
  def config(steps):
    c = tiny("distill", total_steps=steps, checkpoint_every=2)
    c.distill.update(teacher_steps=4, rounds=2, steps_per_round=2)
    return c

  loop.train(config(4), str(tmp_path / "a"), synthetic())
  loop.train(config(2), str(tmp_path / "b"), synthetic())
  resumed = loop.train(config(4), str(tmp_path / "b"), synthetic())
  assert int(resumed.state.step) == 4
  assert_same_checkpoint(config(4), tmp_path / "a", tmp_path / "b", 4)


def test_distillation_rounds_halve_the_student_steps():
  config = tiny("distill")
  config.distill.update(teacher_steps=64, rounds=6, steps_per_round=10, first_round_guidance=7.5)
  assert [distill.distill_round(config, s) for s in (0, 9, 10, 59, 100)] == [
      (0, 32, 7.5), (0, 32, 7.5), (1, 16, 1.0), (5, 1, 1.0), (5, 1, 1.0)]


def _sharded_report(variant: str, tolerances: dict) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "sharded_train_check.py"),
                         variant], env=env, capture_output=True, text=True, check=True)
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  zero_share = report.pop("zero_gradient_share")
  assert set(report) == {"data2_fsdp4", "data2_sequence2_tensor2"}
  for layout, r in report.items():
    assert set(r["max_rel_err"]) == set(tolerances), r
    for item, err in r["max_rel_err"].items():
      assert err <= tolerances[item], (layout, item, r)
    assert r["grad_norm"] == pytest.approx(r["ref_grad_norm"], rel=1e-5)
  return zero_share


def test_sharded_steps_on_8_devices_equal_one_device():
  # Per array, normalised by its own largest value: 1.3e-5 (parameters, EMA) and 1.0e-6
  # (gradient) measured.
  assert _sharded_report("", {"params": 5e-5, "ema": 5e-5, "adam_mu": 1e-5}) == {"": None}


def test_sharded_apt_steps_on_8_devices_equal_one_device():
  # D's gradient holds the approximate R1/R2 terms (weight 1000) whose finite differences
  # D(x + sigma eps) - D(x) cancel most digits, so float32 summation order shows up larger
  # there: 1.1e-4 measured per array (1.6e-6 in G's). Biases that start at zero hold only
  # their first Adam update, lr g / (|g| + eps), which turns gradient differences at that
  # level into 2.1e-3 (D) relative after the step.
  zero_share = _sharded_report("apt", {"params": 5e-5, "ema": 5e-5, "adam_mu": 1e-5,
                                       "d_params": 5e-3, "d_adam_mu": 5e-4})
  # D's arrays with an exactly zero gradient (tests/sharded_train_check.py: ZERO_GRADIENT) are
  # compared apart: their gradient is float noise, 4.8e-6 of D's largest measured.
  assert zero_share["d_"] < 1e-4


def test_sharded_apt_step_does_each_samples_discriminator_work_once():
  """The APT step (d_sequential) with fsdp=8 and 8 samples costs each device XLA FLOPs of one
  sample's step on one device (0.96x measured): no G or D work replicated over the devices,
  which would cost up to 8x."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "sharded_apt_flops_check.py")],
                        env=env, capture_output=True, text=True, check=True)
  flops = json.loads(proc.stdout.strip().splitlines()[-1])
  assert 0.8 < flops["fsdp8"] / flops["one_device"] < 1.1, flops


@pytest.mark.parametrize("scan", [False, True], ids=["loop", "scan"])
def test_remat_policies_keep_values_and_gradients(scan):
  """Rematerialised blocks change memory, not results, in the loop and under lax.scan; in the
  loop also for a frozen model (teacher, discriminator) merged outside the gradient it runs
  in."""
  from seedvr2_jax.models.dit import config as dit_config
  from seedvr2_jax.models.dit.nadit import NaDiT
  keys = jax.random.split(jax.random.key(0), 2)
  vid, txt = jax.random.normal(keys[0], (1, 2, 8, 8, 33)), jax.random.normal(keys[1], (1, 5, 32))
  t = np.array([500.0], np.float32)
  # The 7B layout; with scan_layers 4 blocks are one lax.scan over two block pairs.
  cfg = dit_config.official("7b", **{**dit_config.TINY["7b"], "num_layers": 4 if scan else 2},
                            scan_layers=scan)
  state = nnx.split(NaDiT(cfg, nnx.Rngs(0)))[1]
  results = {}
  for remat in dit_config.REMAT_POLICIES:
    graphdef = nnx.split(nnx.eval_shape(lambda remat=remat: NaDiT(
        dataclasses.replace(cfg, remat=remat), nnx.Rngs(0))))[0]

    @jax.jit
    def grads(state, graphdef=graphdef):
      loss = lambda s: (nnx.merge(graphdef, s)(vid, txt, t) ** 2).sum()
      if scan:
        return jax.grad(loss)(state), 0.0
      frozen = nnx.merge(graphdef, state)
      return jax.grad(loss)(state), jax.grad(lambda a: a * frozen(vid, txt, t).sum())(1.0)

    params_grads, outer = grads(state)
    results[remat] = (jax.tree.map(np.asarray, params_grads), float(outer))
  ref_grads, ref_outer = results.pop("none")
  for remat, (grads, outer) in results.items():
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                                                         err_msg=remat), grads, ref_grads)
    assert outer == pytest.approx(ref_outer, rel=1e-6), remat


def _saved_names(cfg, capsys) -> collections.Counter:
  """How many residuals of each `checkpoint_name` the gradient of `cfg`'s DiT saves."""
  from seedvr2_jax.models.dit.nadit import NaDiT
  graphdef, state = nnx.split(nnx.eval_shape(lambda: NaDiT(cfg, nnx.Rngs(0))))
  vid, txt = jnp.zeros((1, 2, 8, 8, 33)), jnp.zeros((1, 5, 32))
  capsys.readouterr()
  jax.ad_checkpoint.print_saved_residuals(
      lambda s: nnx.merge(graphdef, s)(vid, txt, jnp.full((1,), 500.0)).sum(), state)
  return collections.Counter(re.findall(r"named '(\w+)'", capsys.readouterr().out))


def test_remat_by_name_saves_exactly_the_named_activations(capsys):
  """remat="names" keeps the tagged projections and attention outputs of every block and
  recomputes the rest; `remat_names` picks which; "full" keeps none of them."""
  from seedvr2_jax.models.dit import config as dit_config
  cfg = dit_config.official("3b", **dit_config.TINY["3b"], remat="names")
  saved = _saved_names(cfg, capsys)
  # 4 blocks x (video, text); the last block is video-only: no text MLP, its text attention
  # output unused; SwiGLU has two input projections.
  assert saved == {"qkv": 8, "attention": 7, "attn_out": 7, "mlp_in": 14, "mlp_out": 7}
  only_qkv = dataclasses.replace(cfg, remat_names=("qkv", "attention"))
  assert _saved_names(only_qkv, capsys) == {"qkv": 8, "attention": 7}
  assert not _saved_names(dataclasses.replace(cfg, remat="full"), capsys)
  with pytest.raises(ConfigError, match="unknown remat_names"):
    dataclasses.replace(cfg, remat_names=("qkv", "logits"))


@pytest.mark.parametrize("variant,layers", [("3b", dict(num_layers=8, mm_layers=2)),
                                             ("7b", dict(num_layers=6))])
def test_scanned_blocks_equal_the_loop(variant, layers):
  """scan_layers runs repeating block pairs under lax.scan: same output and gradients."""
  from seedvr2_jax.models.dit import config as dit_config
  from seedvr2_jax.models.dit.nadit import NaDiT, scan_segments
  keys = jax.random.split(jax.random.key(1), 2)
  vid, txt = jax.random.normal(keys[0], (1, 2, 8, 8, 33)), jax.random.normal(keys[1], (1, 5, 32))
  t = np.array([500.0], np.float32)
  cfg = dit_config.official(variant, **{**dit_config.TINY[variant], **layers}, remat="full")
  graphdef, state = nnx.split(NaDiT(cfg, nnx.Rngs(0)))
  scanned = nnx.split(nnx.eval_shape(lambda: NaDiT(
      dataclasses.replace(cfg, scan_layers=True), nnx.Rngs(0))))[0]
  segments = scan_segments([nnx.split(b)[0] for b in nnx.merge(graphdef, state).blocks])
  assert segments == ([(0, 1), (1, 2), (2, 6), (6, 7), (7, 8)] if variant == "3b" else [(0, 6)])
  taps = (2, 5) if variant == "3b" else (1, 4)  # the discriminator trunk's hidden states
  results = []
  for gdef in (graphdef, scanned):
    loss = lambda s, gdef=gdef: (nnx.merge(gdef, s)(vid, txt, t) ** 2).mean()
    hidden = nnx.merge(gdef, state).hidden_states(vid, txt, t, taps)[:2]
    results.append(jax.tree.map(np.asarray, (jax.value_and_grad(loss)(state), hidden)))
  (loss_scan, grads_scan), hidden_scan = results[1]
  (loss_loop, grads_loop), hidden_loop = results[0]
  assert loss_scan == pytest.approx(loss_loop, rel=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               grads_scan, grads_loop)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
               hidden_scan, hidden_loop)


def test_random_split_makes_every_block_from_its_own_key():
  """One compiled init per block graph: the model's structure, blocks of one graph differ,
  the same seed gives the same values, and they are initialised like NaDiT's own init."""
  from seedvr2_jax.models.dit import config as dit_config
  from seedvr2_jax.models.dit.nadit import NaDiT
  from seedvr2_jax.train import state as state_lib
  cfg = dit_config.official("7b", **{**dit_config.TINY["7b"], "num_layers": 4})
  mesh = mesh_lib.make_mesh({"data": 1, "fsdp": 1, "sequence": 1, "tensor": 1})
  _, abstract_params, abstract_rest = state_lib.split_model(
      nnx.eval_shape(lambda: NaDiT(cfg, nnx.Rngs(0))))
  shardings = (sharding.state_shardings(abstract_params, mesh, sharding.DEFAULT_RULES),
               jax.tree.map(lambda _: sharding.replicated(mesh), abstract_rest))
  pure = lambda tree: jax.tree.map(np.asarray, nnx.to_pure_dict(tree))
  params = pure(start.random_split(cfg, 5, *shardings)[0])
  again = pure(start.random_split(cfg, 5, *shardings)[0])
  reference = pure(state_lib.split_model(NaDiT(cfg, nnx.Rngs(5)))[1])
  assert jax.tree.structure(params) == jax.tree.structure(reference)
  jax.tree.map(np.testing.assert_array_equal, params, again)
  qkv = [params["blocks"][i]["attn"]["proj_qkv"]["vid"]["kernel"] for i in range(4)]
  assert not np.allclose(qkv[0], qkv[2])  # blocks 0 and 2 share a graph, not values
  ref_qkv = reference["blocks"][0]["attn"]["proj_qkv"]["vid"]["kernel"]
  assert qkv[0].shape == ref_qkv.shape and np.std(qkv[0]) == pytest.approx(np.std(ref_qkv),
                                                                            rel=0.1)


def test_official_block_layouts_scan_in_few_segments():
  from seedvr2_jax.models.discriminator import default_head_layers
  from seedvr2_jax.models.dit import config as dit_config
  from seedvr2_jax.models.dit.nadit import NaDiT, _cut_after, scan_segments
  for variant, expected, cut in (
      ("3b", [(0, 10), (10, 30), (30, 31), (31, 32)],
       [(0, 10), (10, 14), (14, 22), (22, 23), (23, 29), (29, 30), (30, 31), (31, 32)]),
      ("7b", [(0, 36)], [(0, 16), (16, 26), (26, 36)])):
    cfg = dit_config.official(variant)
    model = nnx.eval_shape(lambda: NaDiT(cfg, nnx.Rngs(0)))
    segments = scan_segments([nnx.split(b)[0] for b in model.blocks])
    assert segments == expected, variant
    assert _cut_after(segments, default_head_layers(cfg)) == cut, variant


def _train_cli(workdir, *overrides):
  from seedvr2_jax import cli
  return cli.main(["train", "--config", TINY, "--workdir", str(workdir), *overrides])


def test_train_command_learns_on_real_frames_and_resumes(tmp_path, capsys):
  """configs/tiny.py through the CLI: real sample clips, degraded and encoded on the fly."""
  workdir = tmp_path / "w"
  assert _train_cli(workdir, "--config.total_steps=30") == 0
  assert sorted(os.listdir(workdir / "checkpoints")) == ["20", "30"]
  assert os.listdir(workdir / "tensorboard")
  logged = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [r["step"] for r in logged] == [5, 10, 15, 20, 25, 30]
  losses = [r["loss"] for r in logged]
  assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses
  assert all(r["data/decode_failures"] == 0 for r in logged)
  assert _train_cli(workdir, "--config.total_steps=40") == 0
  assert f"resumed from {workdir} at step 30" in capsys.readouterr().out
  logged = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [r["step"] for r in logged][-2:] == [35, 40]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["20", "30", "40"]


def test_train_command_with_data_workers_resumes_exactly(tmp_path):
  """Real frames decoded and degraded by 2 worker processes: 2 + 2 steps equal 4 straight
  (parameters, EMA, optimizer, key and the data position)."""
  workers = ("--config.data.workers=2", "--config.checkpoint_every=2")
  assert _train_cli(tmp_path / "a", "--config.total_steps=4", *workers) == 0
  assert _train_cli(tmp_path / "b", "--config.total_steps=2", *workers) == 0
  assert _train_cli(tmp_path / "b", "--config.total_steps=4", *workers) == 0
  assert_same_checkpoint(tiny(), tmp_path / "a", tmp_path / "b", 4)


class _Recorded:
  """A batch iterator that keeps (host copies of) the batches it delivers."""

  def __init__(self, batches):
    self.batches, self.seen = batches, []

  def __next__(self):
    batch = next(self.batches)
    self.seen.append(jax.tree.map(np.asarray, batch))
    return batch

  def __getattr__(self, name):  # get_state, set_state, metrics, close
    return getattr(self.batches, name)


def test_train_with_device_degradation_steps_on_the_stage_outputs(tmp_path):
  """data.degrade_on="device": the run steps on LQ clips equal to the device stage (and the
  codec) applied directly to the examples' drawn plans."""
  from seedvr2_jax.data import batching
  config = tiny(total_steps=2)
  config.data.degrade_on = "device"
  recorded = []
  run = loop.train(config, str(tmp_path),
                   lambda run: recorded.append(_Recorded(data.from_config(run))) or recorded[0])
  assert int(run.state.step) == 2 and len(recorded[0].seen) == 2
  examples = batching.make_batches(config.data, batch_size=2, seed=config.seed,
                                   process_index=0, process_count=1).examples
  degrade = recorded[0].finish  # the run's degrade_jax.Degrader (its compiled program)
  for step, delivered in enumerate(recorded[0].seen):
    drawn = jax.tree.map(lambda *a: np.stack(a), *[examples(2 * step + i) for i in range(2)])
    assert {"plan", "video"} <= drawn.keys() and "lq" not in drawn
    direct = degrade({k: drawn[k] for k in ("hq", "plan", "video")})
    assert direct["lq"].shape == (2, 5, 16, 16, 3) and direct["lq"].dtype == np.uint8
    np.testing.assert_array_equal(delivered["hq"], direct["hq"])
    np.testing.assert_array_equal(delivered["lq"], direct["lq"])


def test_train_command_rejects_a_workdir_of_other_data(tmp_path, capsys):
  loop.train(tiny(total_steps=2), str(tmp_path), synthetic())
  capsys.readouterr()
  assert _train_cli(tmp_path, "--config.total_steps=4") == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "does not fit this run's data" in err, err
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]


def test_train_command_rejects_unknown_config_keys(tmp_path, capsys):
  assert _train_cli(tmp_path, "--config.optim.lrr=1") == 2
  err = capsys.readouterr().err
  assert "optim.lrr" in err and not os.listdir(tmp_path)


def test_train_command_rejects_bad_data_before_writing(tmp_path, capsys):
  assert _train_cli(tmp_path, "--config.data.bucket_stages=((0, (1,)),)") == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "data.bucket_stages" in err, err
  assert not os.listdir(tmp_path)


def test_train_command_on_precomputed_latents(tmp_path, capsys):
  from seedvr2_jax import cli
  media = os.path.join(ROOT, "tests", "fixtures", "media")
  out = tmp_path / "latents"
  assert cli.main(["precompute-latents", media, str(out), "--config", TINY,
                   "--buckets", "5x64x64,9x128x128"]) == 0
  assert "wrote 2 clips" in capsys.readouterr().out
  assert cli.main(["precompute-latents", media, str(out), "--config", TINY]) == 2
  assert "exists" in capsys.readouterr().err
  workdir = tmp_path / "w"
  assert _train_cli(workdir, "--config.total_steps=4", f"--config.data.latents={out}",
                    "--config.log_every=2") == 0
  logged = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [r["step"] for r in logged] == [2, 4] and all(np.isfinite(r["loss"]) for r in logged)


def test_pod_configs_hold_the_paper_recipe():
  for variant, blocks in (("3b", 32), ("7b", 36)):
    config = config_lib.load_config(os.path.join(ROOT, "configs", f"train_{variant}.py"))
    assert (config.optim.lr, config.optim.weight_decay, config.batch_size) == (1e-6, 0.01, 72)
    assert start.dit_config_of(config).num_layers == blocks
    distilling = config_lib.load_config(
        os.path.join(ROOT, "configs", f"train_{variant}.py:distill"))
    assert distilling.objective == "distill"
    assert [distill.distill_round(distilling, s)[1:] for s in (0, 10_000, 59_999)] == [
        (32, 7.5), (16, 1.0), (1, 1.0)]
    apt = config_lib.load_config(os.path.join(ROOT, "configs", f"train_{variant}.py:apt"))
    assert (apt.objective, apt.d_optim.lr, apt.d_optim.weight_decay) == ("apt", 1e-6, 0.01)
    assert apt.apt.r1 == apt.apt.r2 == 1000 and apt.apt.l1 == apt.apt.feature_matching == 0.1
    stages = bucketing.bucket_stages(apt.data, len(apt.data.buckets))
    assert [b[0] for b in apt.data.buckets if stages[0][1][apt.data.buckets.index(b)]] == [1]
  with pytest.raises(ValueError, match="unknown variant"):
    config_lib.load_config(os.path.join(ROOT, "configs", "train_3b.py:sharp"))


def _apt_params(run):
  return {"g": params_of(run),
          "d": jax.tree.map(np.asarray, nnx.to_pure_dict(run.state.params["discriminator"]))}


def test_apt_resume_continues_exactly(tmp_path):
  straight = loop.train(tiny_apt(total_steps=4), str(tmp_path / "a"), synthetic())
  loop.train(tiny_apt(total_steps=2, checkpoint_every=2), str(tmp_path / "b"), synthetic())
  resumed = loop.train(tiny_apt(total_steps=4), str(tmp_path / "b"), synthetic())
  jax.tree.map(np.testing.assert_array_equal, _apt_params(resumed), _apt_params(straight))
  assert_same_checkpoint(tiny_apt(), tmp_path / "a", tmp_path / "b", 4)
  logged = [json.loads(line) for line in open(tmp_path / "b" / "metrics.jsonl")]
  for name in ("loss", "g/gan", "g/l1", "g/feature_matching", "d/gan", "d/r1", "d/r2",
               "d/real_logit", "d/fake_logit", "d/grad_norm"):
    assert all(np.isfinite(r[name]) for r in logged), name


def test_apt_generator_step_sees_the_frozen_discriminator():
  """The G update of a step is the same whatever D's own update in that step does (D is a
  constant of G's loss, feature matching included): D's Adam second moment set huge makes D
  all but stand still, which must not change G's update."""
  run = loop.build(tiny_apt(total_steps=4))  # the resume test's config: its compiled step
  step = loop.make_step_fn(run)
  batches = data.SyntheticMoments(run.mesh, 2, LATENT_THW)
  state, _ = step(run.state, next(batches), run.frozen)  # past step 0, where warm-up lr is 0
  copy = lambda tree: jax.tree.map(jnp.copy, tree)  # the step donates its state
  chain = copy(state.opt_state["discriminator"])
  adam = chain[1][0]._replace(nu=jax.tree.map(lambda v: v + 1e12, chain[1][0].nu))
  stalled_d_opt = (chain[0], (adam, *chain[1][1:]), *chain[2:])
  batch = next(batches)
  stalled_state = copy(state)
  stalled, m_stalled = step(stalled_state.replace(
      opt_state={**stalled_state.opt_state, "discriminator": stalled_d_opt}), batch, run.frozen)
  moving, m_moving = step(copy(state), batch, run.frozen)
  pure = lambda tree: jax.tree.map(np.asarray, nnx.to_pure_dict(tree))
  g, d = (lambda s: pure(s.params["dit"])), (lambda s: pure(s.params["discriminator"]))
  jax.tree.map(np.testing.assert_array_equal, g(moving), g(stalled))
  assert max(float(np.abs(a - b).max()) for a, b in zip(
      jax.tree.leaves(d(moving)), jax.tree.leaves(d(stalled)))) > 1e-6
  assert max(float(np.abs(a - b).max()) for a, b in zip(
      jax.tree.leaves(g(moving)), jax.tree.leaves(g(state)))) > 1e-6
  assert float(m_moving["g/feature_matching"]) > 0
  assert float(m_moving["loss"]) == float(m_stalled["loss"])


def test_apt_sequential_discriminator_step_equals_the_batched_one():
  """`apt.d_sequential` (the D step's four sample groups one at a time, for memory, reusing the
  G step's D(real) and D(fake) logits) gives the batched D loss terms and gradient."""
  run = loop.build(tiny_apt(total_steps=4))
  d = run.objective.disc
  batch = next(data.SyntheticMoments(run.mesh, 2, LATENT_THW))
  keys = jax.random.split(jax.random.key(3), 5)
  batch = run.objective.prepare(run.frozen, batch, keys[0])
  noise = jax.random.normal(keys[1], batch["hq"].shape)
  t_b = adv.sample_discriminator_timesteps(keys[2], 2, adv.TIMESTEP_SHIFT_VIDEO)
  d_noise = jax.random.normal(keys[3], batch["hq"].shape)

  d_params = run.state.params["discriminator"]
  _, (_, x0, clean_logits) = jax.jit(lambda g_params: apt.generator_loss(
      run.objective.dit.merge(g_params), d.merge(d_params), batch, noise, t_b, d_noise,
      apt.APTConfig()))(run.state.params["dit"])

  def d_step(sequential: bool):
    return jax.jit(lambda p: apt.discriminator_grads(
        d.graphdef, p, d.rest, batch, x0, t_b, d_noise, keys[4],
        apt.APTConfig(d_sequential=sequential), clean_logits, d.params_sharding))(d_params)

  (loss_b, metrics_b), grads_b = d_step(False)
  (loss_s, metrics_s), grads_s = d_step(True)
  # R1 / R2 (weight 1000) square differences of nearly equal logits, and their gradients are
  # differences of nearly equal gradients: float32 summation order shows at ~1e-5 relative in
  # the terms and ~2e-4 in the gradient (a mixed-up group would be off by O(1)).
  np.testing.assert_allclose(float(loss_s), float(loss_b), rtol=1e-5)
  for name in metrics_b:
    np.testing.assert_allclose(float(metrics_s[name]), float(metrics_b[name]), rtol=1e-4,
                               atol=1e-8, err_msg=name)
  leaves = lambda tree: [np.asarray(x) for x in jax.tree.leaves(nnx.to_pure_dict(tree))]
  norm = lambda xs: float(np.sqrt(sum(np.sum(np.square(x)) for x in xs)))
  assert norm(leaves(grads_b)) > 1e-3
  diff = [a - b for a, b in zip(leaves(grads_s), leaves(grads_b))]
  assert norm(diff) < 1e-3 * norm(leaves(grads_b))


def test_export_run_writes_the_ema_generator_and_chains_into_init(tmp_path, capsys):
  from seedvr2_jax import cli
  from seedvr2_jax.convert import bundle
  workdir, out = tmp_path / "w", tmp_path / "bundle"
  run = loop.train(tiny(total_steps=2), str(workdir), synthetic())
  export = lambda *extra: cli.main(["export-run", "--config", TINY, "--workdir", str(workdir),
                                    "--out", str(out), *extra])
  assert export() == 0
  b = bundle.load(str(out))
  ema = jax.tree.map(np.asarray, nnx.to_pure_dict(run.state.ema["dit"]))
  saved = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.split(b.dit_state, nnx.Param, ...)[1]))
  jax.tree.map(np.testing.assert_array_equal, saved, ema)
  assert not jax.tree.all(jax.tree.map(np.array_equal, ema, params_of(run)))  # EMA != raw
  jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(b.vae_state),
               nnx.to_pure_dict(run.frozen["vae"]))
  np.testing.assert_array_equal(b.pos_emb, run.frozen["txt_pos"][:int(run.frozen["txt_pos_len"])])
  # The export starts the next stage: its parameters become the new run's.
  chained_config = tiny()
  chained_config.init.checkpoint = str(out)
  chained = loop.build(chained_config)
  jax.tree.map(np.testing.assert_array_equal, params_of(chained), ema)
  capsys.readouterr()
  for extra, message in (((), "exists (pass --overwrite"), (("--step", "7", "--overwrite"),
                                                             "no checkpoint at step 7")):
    assert export(*extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
  missing = tmp_path / "not_a_run"
  assert cli.main(["export-run", "--config", TINY, "--workdir", str(missing), "--out",
                   str(tmp_path / "other")]) == 2
  assert "no checkpoints folder" in capsys.readouterr().err
  assert not missing.exists() and not (tmp_path / "other").exists()
  bad_vae = tiny()
  bad_vae.init.checkpoint = str(out)
  bad_vae.vae.scaling_factor = 0.5
  with pytest.raises(ConfigError, match="VAE config differs"):
    loop.build(bad_vae)


def test_regression_objective_fits_the_one_step_prediction(tmp_path):
  """objective "regression": the one-step x0 (pure noise + LQ condition at t = T, as `restore`
  runs it) is pulled to the HQ latent; on synthetic latents its L1 falls."""
  config = tiny(objective="regression", total_steps=12, log_every=1, ema_decay=0.0)
  config.model.update(num_layers=2, mm_layers=1)
  loop.train(config, str(tmp_path), synthetic())
  logged = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  losses = [r["loss"] for r in logged]
  assert len(losses) == 12 and np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses


def test_bf16_first_moment_trains(tmp_path):
  """optim.mu_dtype="bfloat16": AdamW keeps its first moment in bfloat16 (the second in
  float32) and the one-step regression still learns."""
  config = tiny(objective="regression", total_steps=12, log_every=1, ema_decay=0.0)
  config.model.update(num_layers=2, mm_layers=1)
  config.optim.mu_dtype = "bfloat16"
  run = loop.train(config, str(tmp_path), synthetic())
  adam = run.state.opt_state["dit"][1][0]
  assert {x.dtype for x in jax.tree.leaves(adam.mu)} == {jnp.dtype(jnp.bfloat16)}
  assert {x.dtype for x in jax.tree.leaves(adam.nu)} == {jnp.dtype(jnp.float32)}
  losses = [json.loads(line)["loss"] for line in open(tmp_path / "metrics.jsonl")]
  assert len(losses) == 12 and np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
  config.optim.name = "rmsprop"
  with pytest.raises(ConfigError, match="needs adamw"):
    loop.build(config)


def _apt_draws(run, batch):
  """The latents and random inputs of the run's next APT step (its own key and draws)."""
  _, prep_key, loss_key = jax.random.split(jax.random.wrap_key_data(run.state.key), 3)
  cfg = run.objective.cfg
  lat = run.objective.prepare(run.frozen, batch, prep_key)
  noise, t_b, d_noise, perturb_key = apt.draws(loss_key, lat, cfg)
  video = lat["hq"].shape[1] > 1
  return dict(lat=lat, noise=noise, t_b=t_b, d_noise=d_noise, perturb_key=perturb_key,
              sigma=cfg.sigma_video if video else cfg.sigma_image)


def _apt_losses_by_hand(generator, discriminator, d, w):
  """(L_G, L_D, terms) of SeedVR2's APT written out from direct model calls."""
  lat = d["lat"]
  hq, lq, txt, txt_len = lat["hq"], lat["lq"], lat["txt_pos"], lat["txt_pos_len"]
  cond = jnp.concatenate([lq, jnp.ones_like(lq[..., :1])], axis=-1)
  t_full = jnp.full((hq.shape[0],), 1000.0)
  x0 = d["noise"] - generator(jnp.concatenate([d["noise"], cond], -1), txt, t_full, txt_len)
  s = (d["t_b"] / 1000.0)[:, None, None, None, None]
  score = lambda x: discriminator((1 - s) * x + s * d["d_noise"], cond, txt, d["t_b"], txt_len)
  (fake, fake_f), (real, real_f) = score(x0), score(hq)
  g_terms = {"g/gan": jnp.mean(jax.nn.softplus(real - fake)),
             "g/l1": jnp.mean(jnp.abs(x0 - hq)),
             "g/feature_matching": jnp.mean(jnp.stack(
                 [jnp.mean(jnp.abs(a - b)) for a, b in zip(fake_f, real_f)]))}
  g_loss = (w.gan * g_terms["g/gan"] + w.l1 * g_terms["g/l1"]
            + w.feature_matching * g_terms["g/feature_matching"])
  x0 = jax.lax.stop_gradient(x0)
  real_key, fake_key = jax.random.split(d["perturb_key"])
  real_p = score(hq + d["sigma"] * jax.random.normal(real_key, hq.shape))[0]
  fake_p = score(x0 + d["sigma"] * jax.random.normal(fake_key, hq.shape))[0]
  fake = score(x0)[0]
  d_terms = {"d/gan": jnp.mean(jax.nn.softplus(fake - real)),
             "d/r1": jnp.mean((real - real_p) ** 2), "d/r2": jnp.mean((fake - fake_p) ** 2)}
  d_loss = w.gan * d_terms["d/gan"] + w.r1 * d_terms["d/r1"] + w.r2 * d_terms["d/r2"]
  return g_loss, d_loss, {**g_terms, **d_terms}


@pytest.mark.parametrize("latent_thw", [(2, 8, 8), (1, 8, 8)], ids=["clip", "image"])
def test_apt_step_logs_the_losses_and_gradients_of_direct_model_calls(latent_thw):
  """Every logged APT loss term, L_G and L_D (and for clips both gradient norms) equal SeedVR2's
  losses written out from direct generator / discriminator calls (clips and images use their
  own sigma and timestep shift)."""
  config = tiny_apt(total_steps=4)  # the other APT tests' config: their compiled step
  run = loop.build(config)
  step = loop.make_step_fn(run)
  batch = next(data.SyntheticMoments(run.mesh, 2, latent_thw))
  w = apt.APTConfig(**config.apt)
  draws = _apt_draws(run, batch)
  g_of, d_of = run.objective.dit.merge, run.objective.disc.merge
  norm = lambda tree: jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))

  @jax.jit
  def by_hand(g_params, d_params):
    g_loss_of = lambda p: _apt_losses_by_hand(g_of(p), d_of(d_params), draws, w)
    d_loss_of = lambda p: _apt_losses_by_hand(g_of(g_params), d_of(p), draws, w)[1]
    if latent_thw[0] == 1:  # images: the losses (the clip case checks the gradients too)
      g_loss, d_loss, terms = g_loss_of(g_params)
      return {**terms, "loss": g_loss, "d/loss": d_loss}
    (g_loss, (_, d_loss, terms)), g_grads = jax.value_and_grad(
        lambda p: (lambda out: (out[0], out))(g_loss_of(p)), has_aux=True)(g_params)
    return {**terms, "loss": g_loss, "d/loss": d_loss, "grad_norm": norm(g_grads),
            "d/grad_norm": norm(jax.grad(d_loss_of)(d_params))}

  want = by_hand(run.state.params["dit"], run.state.params["discriminator"])
  _, logged = step(jax.tree.map(jnp.copy, run.state), batch, run.frozen)
  # R1 / R2 square differences of nearly equal logits (batched calls here, separate above):
  # float32 summation order shows at up to ~1e-3 relative there; a mixed-up term is off by O(1).
  for name, value in want.items():
    rtol = 1e-2 if name in ("d/r1", "d/r2") else 1e-4 if "grad_norm" in name else 2e-5
    np.testing.assert_allclose(float(logged[name]), float(value), rtol=rtol, err_msg=name)
  assert float(want["g/feature_matching"]) > 0 and float(want["d/r1"]) > 0


def test_apt_generator_gradient_flows_through_the_discriminator():
  """G's update depends on D's parameters (the GAN and feature-matching gradients reach G
  through D): the same step with another D moves G elsewhere."""
  run = loop.build(tiny_apt(total_steps=4))
  step = loop.make_step_fn(run)
  batch = next(data.SyntheticMoments(run.mesh, 2, LATENT_THW))
  copy = lambda tree: jax.tree.map(jnp.copy, tree)
  warm, _ = step(copy(run.state), batch, run.frozen)  # past step 0 (warm-up lr 0)
  other_d = jax.tree.map(lambda x: x * 1.5, warm.params["discriminator"])
  a, _ = step(copy(warm), batch, run.frozen)
  b, _ = step(copy(warm).replace(params={**warm.params, "discriminator": other_d}), batch,
              run.frozen)
  pure = lambda s: jax.tree.map(np.asarray, nnx.to_pure_dict(s.params["dit"]))
  moved = max(float(np.abs(x - y).max()) for x, y in zip(jax.tree.leaves(pure(a)),
                                                        jax.tree.leaves(pure(b))))
  assert moved > 1e-7, moved
