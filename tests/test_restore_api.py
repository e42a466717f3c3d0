"""The Python API (`seedvr2_jax.Restorer`), many inputs with one model load, and resumable
restores: the toy model on tiny shapes (68-pixel short side, so 160 wide: even, as 4:2:0 video
needs; clips of 5 frames)."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import FIXTURES
from seedvr2_jax import cli
from seedvr2_jax.data import video_io
from seedvr2_jax.errors import ConfigError, InputError
from seedvr2_jax.infer import batch, clips, one_step, restore
from seedvr2_jax.infer.options import RestoreOptions

BIKES = os.path.join(FIXTURES, "media", "bikes_2s.mp4")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONS = dict(short_side=68, clip_frames=5, clip_overlap=2)
FLAGS = ("--short-side", "68", "--clip-frames", "5", "--clip-overlap", "2")


def _read(path) -> np.ndarray:
  return np.stack(list(video_io.read_frames(video_io.probe(str(path)))))


@pytest.fixture(scope="module")
def restorer():
  from seedvr2_jax import Restorer
  return Restorer.load(log=lambda line: None, **OPTIONS)


@pytest.fixture(scope="module")
def bikes():
  return _read(BIKES)


def test_array_in_equals_the_file_and_a_second_call_does_not_retrace(restorer, bikes, tmp_path):
  first = restorer.restore_array(bikes[:9])
  # Stage programs traced: encode, dit, and decode of the first latent frame and of the next.
  assert first.shape == (9, 68, 160, 3) and first.dtype == np.uint8 and restorer.traces == 4
  assert restorer.restore_file(BIKES, str(tmp_path / "frames"), max_frames=9) == 9
  np.testing.assert_array_equal(_read(tmp_path / "frames"), first)  # lossless PNG frames
  again = restorer.restore_array(bikes[9:18], seed=1)  # same shape, other frames and noise
  assert restorer.traces == 4 and np.abs(again.astype(int) - first).mean() > 1
  as_float = restorer.restore_array(bikes[:9] / np.float32(255))  # float in [0, 1]
  # Float input is another encode program; the later stages see the same shapes.
  assert restorer.traces == 5 and np.abs(as_float.astype(int) - first).max() <= 1
  with pytest.raises(InputError, match=r"expected frames \(T, H, W, 3\)"):
    restorer.restore_array(bikes[0])
  with pytest.raises(ConfigError, match="checkpoint are chosen at load time"):
    restorer.restore_array(bikes[:9], checkpoint="other")


def test_programs_compile_while_the_weights_load_and_a_dry_run_loads_none(tmp_path, monkeypatch):
  """The weights load in a background thread while the stage programs are compiled from the
  checkpoint's shapes: here the load waits until a program exists, which would deadlock (and
  time out) if compiling waited for the weights. A dry run plans without loading them."""
  programs_ready, order = threading.Event(), []
  load_models, programs = restore.load_models, one_step.Restorer.programs

  def load_after_programs(*args):
    assert programs_ready.wait(60), "the programs waited for the weights"
    order.append("weights")
    return load_models(*args)

  def programs_then_release(self, *args):
    compiled = programs(self, *args)
    order.append("programs")
    programs_ready.set()
    return compiled

  monkeypatch.setattr(restore, "load_models", load_after_programs)
  monkeypatch.setattr(one_step.Restorer, "programs", programs_then_release)
  options = RestoreOptions(max_frames=5, **OPTIONS)
  assert restore.restore_media(BIKES, str(tmp_path / "out.mp4"), options, log=print) == 5
  assert order[:2] == ["programs", "weights"]
  order.clear()
  dry = RestoreOptions(max_frames=5, dry_run=True, memory_budget=8, **OPTIONS)
  assert restore.restore_media(BIKES, str(tmp_path / "dry.mp4"), dry, log=print) == 0
  assert "weights" not in order and not os.path.exists(tmp_path / "dry.mp4")


def test_resume_point_covers_every_later_frame_with_all_its_clips():
  plan = clips.plan_clips(21, 5, 2)  # starts 0, 3, 6, 9, 12, 15, 16
  assert plan.starts == (0, 3, 6, 9, 12, 15, 16)
  assert clips.resume_point(plan, 0) == (0, 0)
  assert clips.resume_point(plan, 9) == (2, 3)  # clip 2 (frames 6-10) reaches past frame 9
  assert clips.resume_point(plan, 16) == (4, 4)  # clips 4 and 5 both cover frame 16


def _video(path, frames):
  with video_io.VideoWriter(str(path), video_io.DEFAULT_FPS) as writer:
    for frame in frames:
      writer.write(frame)


def test_a_folder_of_two_videos_is_restored_with_one_model_load(restorer, bikes, tmp_path,
                                                                monkeypatch, capsys):
  folder, out = tmp_path / "in", tmp_path / "out"
  folder.mkdir()
  _video(folder / "a.mp4", bikes[:9])
  _video(folder / "b.mkv", bikes[20:29])
  (folder / "notes.txt").write_text("not a video")
  loads = []
  load_models = restore.load_models
  monkeypatch.setattr(restore, "load_models", lambda *a: loads.append(a) or load_models(*a))
  argv = ["restore", str(folder), "-o", str(out), "--output-ext", "frames", *FLAGS]
  assert cli.main(argv) == 0
  assert len(loads) == 1 and sorted(os.listdir(out)) == ["a", "b"]
  assert "restored 2, skipped 0" in capsys.readouterr().out
  for name, video in (("a", "a.mp4"), ("b", "b.mkv")):  # equal to the API on the same frames
    np.testing.assert_array_equal(_read(out / name), restorer.restore_array(_read(folder / video)))
  assert cli.main(argv) == 0 and len(loads) == 1  # outputs exist: skipped, nothing loaded
  assert "restored 0, skipped 2" in capsys.readouterr().out
  listed = tmp_path / "list.txt"
  listed.write_text("in/a.mp4\n# a comment\nin/missing.mp4\n")
  assert cli.main(["restore", str(listed), "-o", str(tmp_path / "o2"), *FLAGS]) == 2
  captured = capsys.readouterr()
  assert "restored 1, skipped 0 (output exists; --overwrite replaces), failed 1" in captured.out
  assert "error: 1 of 2 inputs failed: " in captured.err.splitlines()[-1]
  assert os.listdir(tmp_path / "o2") == ["a.mp4"] and len(loads) == 2
  jobs = batch.jobs_for([str(folder)], str(out), "frames")
  share = batch.restore_jobs(jobs, restorer.options, many=True, process=(1, 2), log=print)
  assert share.skipped == [str(out / "b")] and len(loads) == 2  # process 1 of 2: every second


def test_each_output_finishes_while_the_next_input_is_restored(restorer, bikes, tmp_path,
                                                               monkeypatch):
  """With several inputs, an output's last step (encoder flush, mux, rename) runs beside the
  next input's restore; an error there fails that input alone and leaves no file of it."""
  from seedvr2_jax.infer import api
  folder = tmp_path / "in"
  folder.mkdir()
  for name, start in (("a", 0), ("b", 20), ("c", 40)):
    _video(folder / f"{name}.mp4", bikes[start:start + 5])  # one clip each
  monkeypatch.setattr(api.Restorer, "from_options", lambda *a, **k: restorer)
  second_started, order = threading.Event(), []
  restore_frames, close = restore.restore_frames, video_io.VideoWriter.close

  def restore_frames_seen(*args, **kwargs):
    order.append("restore")
    if order.count("restore") == 2:
      second_started.set()
    return restore_frames(*args, **kwargs)

  def close_a_late_and_b_never(writer):
    name = os.path.basename(writer.path)
    if name == "a.mp4":
      assert second_started.wait(timeout=120), "a.mp4 was finished before b.mp4 started"
    if name == "b.mp4":
      raise InputError("disk full (simulated)")
    close(writer)
    order.append(f"wrote {name}")

  monkeypatch.setattr(restore, "restore_frames", restore_frames_seen)
  monkeypatch.setattr(video_io.VideoWriter, "close", close_a_late_and_b_never)
  jobs = batch.jobs_for([str(folder)], str(tmp_path / "out"), "mp4")
  with pytest.raises(InputError, match="1 of 3 inputs failed: .*b.mp4$"):
    batch.restore_jobs(jobs, restorer.options, many=True, log=print)
  assert order == ["restore", "restore", "wrote a.mp4", "restore", "wrote c.mp4"]
  assert sorted(os.listdir(tmp_path / "out")) == ["a.mp4", "c.mp4"]
  for name in ("a", "c"):
    assert video_io.probe(str(tmp_path / "out" / f"{name}.mp4")).frames == 5


def test_restore_usage_errors_are_one_line(tmp_path, capsys):
  assert cli.main(["restore", "a.mp4", "b.mp4", "c.mp4"]) == 2
  assert "restore takes INPUT OUTPUT, or several inputs with -o" in capsys.readouterr().err
  with pytest.raises(InputError, match="would both be written to"):
    batch.jobs_for([str(tmp_path / "a.mp4"), str(tmp_path / "a.mkv")], str(tmp_path), "mp4")


def test_a_killed_restore_resumes_to_the_uninterrupted_frames(restorer, tmp_path, capsys):
  # PNG frames: lossless and reproducible (two H.264 writes of the same frames may differ).
  out = tmp_path / "restored"
  parts = tmp_path / "restored.parts"
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "xla"))
  argv = [sys.executable, "-m", "seedvr2_jax.cli", "restore", BIKES, str(out), *FLAGS,
          "--max-frames", "21"]  # 7 clips
  run = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while time.time() < deadline and run.poll() is None:
    if parts.is_dir() and sum(f.startswith("seg_") for f in os.listdir(parts)) >= 2:
      break
    time.sleep(0.05)
  run.send_signal(signal.SIGKILL)
  run.wait()
  assert not out.exists() and run.returncode == -signal.SIGKILL
  rerun = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
  assert rerun.returncode == 2 and "pass --resume to continue it" in rerun.stderr
  resumed = subprocess.run([*argv, "--resume"], env=env, cwd=ROOT, capture_output=True,
                           text=True, check=True)
  saved = int(resumed.stdout.split("resuming: ")[1].split()[0])
  # The command skips the runtime's teardown: its output is flushed before the process ends.
  assert resumed.stdout.splitlines()[-1].startswith(f"wrote {out}"), resumed.stdout[-500:]
  assert 3 <= saved < 21 and sorted(os.listdir(tmp_path)) == ["restored", "xla"]
  np.testing.assert_array_equal(_read(out), restorer.restore_array(_read(BIKES)[:21]))
