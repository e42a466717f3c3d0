"""Restoration: pre-processing rules, colour fix, clips, checkpoint bundle, the restore command."""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import FIXTURES, PARITY_A
from seedvr2_jax import cli
from seedvr2_jax.convert import bundle
from seedvr2_jax.convert.safetensors_io import SafetensorsFile, save_file
from seedvr2_jax.data import video_io
from seedvr2_jax.diffusion import condition
from seedvr2_jax.errors import CheckpointError, ConfigError, InputError
from seedvr2_jax.infer import batch, clips, colorfix, preprocess
from seedvr2_jax.infer.options import RestoreOptions
from seedvr2_jax.metrics import fidelity, lpips
from seedvr2_jax.models.dit import config as dit_config
from seedvr2_jax.models.dit import rope as rope_lib
from seedvr2_jax.models.vae import config as vae_config
from seedvr2_jax.utils import background

BIKES = os.path.join(FIXTURES, "media", "bikes_2s.mp4")
BUNNY = os.path.join(FIXTURES, "media", "bigbuckbunny_1s.mp4")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_output_sizes_follow_the_official_rules():
  assert preprocess.area_size(26, 38, 48 * 64) == (46, 67)
  assert preprocess.output_size(720, 1280, resolution=(720, 1280)) == (720, 1280)
  assert preprocess.output_size(272, 640, short_side=256) == (256, 602)
  assert preprocess.output_size(100, 50, scale=2.0) == (200, 100)
  assert preprocess.crop_box(46, 67) == (7, 2, 32, 64)  # (67 - 64) / 2 = 1.5 rounds to 2
  assert [preprocess.padded_length(t) for t in (1, 2, 4, 5, 6, 9, 10)] == [1, 5, 5, 5, 9, 9, 13]
  with pytest.raises(InputError, match="too small"):
    preprocess.output_size(272, 640, resolution=(8, 8))
  with pytest.raises(InputError, match="exactly one"):
    preprocess.output_size(272, 640, resolution=(8, 8), scale=2.0)


def test_adain_matches_style_statistics():
  rng = np.random.default_rng(0)
  content = jnp.asarray(rng.normal(2.0, 3.0, (2, 16, 16, 3)), jnp.float32)
  style = jnp.asarray(rng.normal(-0.5, 0.2, (2, 16, 16, 3)), jnp.float32)
  out = np.asarray(colorfix.color_fix(content, style, "adain"))
  np.testing.assert_allclose(out.mean((1, 2)), np.asarray(style).mean((1, 2)), atol=1e-5)
  np.testing.assert_allclose(out.std((1, 2), ddof=1), np.asarray(style).std((1, 2), ddof=1),
                             rtol=1e-3)
  np.testing.assert_array_equal(colorfix.color_fix(content, style, "none"), content)


def test_clip_plans():
  plan = clips.plan_clips(50, 21, 8)
  assert plan.length == 21 and plan.starts == (0, 13, 26, 29)
  assert clips.plan_clips(50, None, 8).starts == (0,) and clips.plan_clips(20, 21, 8).length == 20
  np.testing.assert_allclose(
      np.bincount(np.concatenate([np.arange(s, s + 21) for s in plan.starts]),
                  weights=plan.weights().reshape(-1)), 1.0, rtol=1e-6)


def _frames(n, h=8, w=8, seed=0):
  return [f for f in np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), np.uint8)]


def test_clips_of_a_temporally_local_model_equal_one_clip():
  frames = _frames(37)
  local = lambda indices, batch: [255 - np.stack(batch)]  # per-frame: no temporal mixing
  one = list(clips.stream_clips(frames, clips.plan_clips(37, None, 0), local))
  for clip_frames, overlap, batch in ((9, 4, 1), (13, 3, 2), (5, 2, 3)):
    many = list(clips.stream_clips(frames, clips.plan_clips(37, clip_frames, overlap), local,
                                   batch))
    np.testing.assert_array_equal(np.stack(many), np.stack(one))


def test_clip_cross_fade_has_no_seam():
  frames = [np.full((2, 2, 3), 100, np.uint8)] * 40
  plan = clips.plan_clips(40, 12, 6)
  # Each clip returns its input plus an offset of 20 * clip index: a hard cut would jump by 20.
  shifted = lambda indices, batch: [np.stack([c + 20 * i for i, c in zip(indices, batch)])]
  out = np.stack(list(clips.stream_clips(frames, plan, shifted)))[:, 0, 0, 0].astype(int)
  assert out[0] == 100 and out[-1] == 100 + 20 * (plan.count - 1)
  steps = np.diff(out)
  assert steps.min() >= 0 and steps.max() <= 8  # a smooth ramp, not a cut of 20


def test_next_batch_is_dispatched_before_results_are_read():
  """Input reading and output writing overlap the device: batch k+1 runs before k's frames."""
  events = []

  def run(indices, batch):
    events.append(("run", indices[0]))
    return [np.stack(batch)]

  plan = clips.plan_clips(30, 10, 2)
  for i, _ in enumerate(clips.stream_clips(_frames(30), plan, run)):
    events.append(("frame", i))
  runs = [events.index(("run", k)) for k in range(plan.count)]
  assert runs[1] < events.index(("frame", 0)) and runs[-1] < events.index(("frame", 20))


@pytest.mark.parametrize("batch", [1, 2])
def test_frames_stream_out_chunk_by_chunk(batch):
  """A clip's frames are yielded as its chunks arrive (each read after the next is asked for),
  cross-faded frames once every clip covering them delivered them; equal to whole clips."""
  frames, plan = _frames(23), clips.plan_clips(23, 9, 3)
  events = []

  def run(indices, clip_batch):  # one frame per chunk, the frame's input negated
    for j in range(plan.length):
      events.append(("chunk", indices[0], j))
      yield np.stack([255 - c[j:j + 1] for c in clip_batch])

  out = []
  for f, frame in enumerate(clips.stream_clips(frames, plan, run, batch)):
    events.append(("frame", f))
    out.append(frame)
  np.testing.assert_array_equal(np.stack(out), 255 - np.stack(frames))
  # Frame 0 is read after chunk 1 of clip 0 was asked for, long before the clip's last chunk.
  assert events[:3] == [("chunk", 0, 0), ("chunk", 0, 1), ("frame", 0)]
  # Frames overlapped by the next batch's first clip wait for its chunks.
  assert events.index(("frame", plan.starts[batch])) > events.index(("chunk", batch, 0))


def test_background_consumer_keeps_order_and_raises_errors():
  seen = []
  with background.BackgroundConsumer(seen.append, max_items=2) as consumer:
    for i in range(50):
      consumer.put(i)
  assert seen == list(range(50))

  def fail(item):
    raise OSError(f"disk full at {item}")

  with pytest.raises(OSError, match="disk full at 0"):
    with background.BackgroundConsumer(fail) as consumer:
      consumer.put(0)
  with pytest.raises(KeyError):  # the caller's error wins; queued items are dropped
    with background.BackgroundConsumer(seen.append) as consumer:
      raise KeyError("stop")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """The parity fixture's official-key weights converted into a checkpoint directory."""
  tmp = tmp_path_factory.mktemp("ckpt")
  with open(os.path.join(PARITY_A, "config.json")) as f:
    conf = json.load(f)
  with np.load(os.path.join(PARITY_A, "pipeline_io.npz")) as io:
    save_file({"emb": io["txt_pos"]}, str(tmp / "pos.safetensors"))
    save_file({"emb": io["txt_neg"]}, str(tmp / "neg.safetensors"))
  out = str(tmp / "bundle")
  bundle.convert(os.path.join(PARITY_A, "dit3b.safetensors"),
                 os.path.join(PARITY_A, "vae.safetensors"), str(tmp / "pos.safetensors"),
                 str(tmp / "neg.safetensors"), out,
                 dit_cfg=dit_config.from_official(conf["dit3b"]["config"], "3b"),
                 vae_cfg=vae_config.from_official(conf["vae"]["config"]), log=lambda *_: None)
  return out


@pytest.mark.parametrize("ulps", [0, 1])
def test_convert_export_roundtrip_is_bit_exact(checkpoint, tmp_path, monkeypatch, ulps):
  """Export writes the official RoPE buffers it was converted from, whatever the frequencies this
  platform computes (`ulps` = 1: a numpy whose float32 `pow` rounds every frequency up)."""
  computed = rope_lib.rope_freqs
  monkeypatch.setattr(rope_lib, "rope_freqs", lambda *a: np.nextafter(
      computed(*a), np.float32(np.inf)) if ulps else computed(*a))
  files = bundle.export(checkpoint, str(tmp_path / "exported"), log=lambda *_: None)
  assert files == ["ema_vae.safetensors", "neg_emb.safetensors", "pos_emb.safetensors",
                   "seedvr2_ema_3b.safetensors"]
  for original, name in (("dit3b", "seedvr2_ema_3b"), ("vae", "ema_vae")):
    ref = SafetensorsFile(os.path.join(PARITY_A, f"{original}.safetensors"))
    got = SafetensorsFile(str(tmp_path / "exported" / f"{name}.safetensors"))
    assert set(got) == set(ref)
    for key in ref:
      assert got[key].dtype == ref[key].dtype and np.array_equal(got[key], ref[key]), key
  with np.load(os.path.join(PARITY_A, "pipeline_io.npz")) as io:
    pos = SafetensorsFile(str(tmp_path / "exported" / "pos_emb.safetensors"))["pos_emb"]
    assert np.array_equal(pos, io["txt_pos"])


def test_checkpoint_weights_are_stored_uncompressed(checkpoint):
  """Restores read the weights as stored: without zstd (which takes about a fifth off trained
  weights and halves the read speed) the files hold at least every weight's bytes."""
  loaded = bundle.load(checkpoint)
  for item, state in (("dit", loaded.dit_state), ("vae", loaded.vae_state)):
    weights = sum(x.nbytes for x in jax.tree.leaves(nnx.to_pure_dict(state)))
    stored = sum(os.path.getsize(os.path.join(root, f))
                 for root, _, files in os.walk(os.path.join(checkpoint, item)) for f in files)
    assert weights <= stored, (item, weights, stored)  # zstd: 0.95x for the DiT


def test_bundle_errors(checkpoint, tmp_path):
  with pytest.raises(InputError, match="exists"):
    bundle.export(checkpoint, checkpoint)
  with pytest.raises(CheckpointError, match="not a seedvr2-jax checkpoint"):
    bundle.load(str(tmp_path))
  with pytest.raises(CheckpointError, match="holds a 3b DiT, not the requested 7b"):
    bundle.convert(os.path.join(PARITY_A, "dit3b.safetensors"), "x", "y", "z",
                   str(tmp_path / "o"), variant="7b")
  with pytest.raises(CheckpointError, match="mis-shaped keys"):  # official sizes vs tiny weights
    bundle.convert(os.path.join(PARITY_A, "dit3b.safetensors"),
                   os.path.join(PARITY_A, "vae.safetensors"), "p", "n", str(tmp_path / "o"))
  assert not os.path.exists(tmp_path / "o")


def _main(capsys, *argv):
  rc = cli.main([str(a) for a in argv])
  captured = capsys.readouterr()
  return rc, captured.out, captured.err


CLIPS = ("--max-frames", "9", "--clip-frames", "5", "--clip-overlap", "2")
SMALL = ("--short-side", "64", *CLIPS)


def test_restore_real_video_with_checkpoint(checkpoint, tmp_path, capsys):
  out = tmp_path / "bunny.mp4"
  rc, stdout, _ = _main(capsys, "restore", BUNNY, out, "--checkpoint", checkpoint, *SMALL)
  assert rc == 0 and "wrote" in stdout
  info = video_io.probe(str(out))  # exactly 1280x720 at short side 64 (the crop gave 112)
  assert (info.frames, info.width, info.height, info.fps) == (9, 114, 64, 25)
  frames = np.stack(list(video_io.read_frames(info)))
  assert frames.shape == (9, 64, 114, 3) and frames.std() > 1.0
  assert [f for f in os.listdir(tmp_path) if "partial" in f] == []


def test_restore_copies_audio_and_defaults_to_the_toy_model(tmp_path, capsys):
  out = tmp_path / "bunny.mp4"
  rc, stdout, _ = _main(capsys, "restore", BUNNY, out, "--short-side", "64", "--clip-frames",
                        "13")
  assert rc == 0 and "using the bundled toy model" in stdout
  info = video_io.probe(str(out))
  assert info.frames == 25 and info.has_audio and (info.width, info.height) == (114, 64)


def test_default_model_restores_a_degraded_clip_better_than_bicubic(tmp_path, capsys):
  # The bundled toy model end to end (`degrade`, then `restore`): nearer the HQ frames than
  # bicubic upsampling of the same LQ frames in LPIPS, within 0.5 dB in PSNR. (bikes_2s.mp4
  # is from the toy's training range; the held-out numbers are in experiments/toy.)
  lq, out = tmp_path / "lq.mp4", tmp_path / "restored.mp4"
  assert _main(capsys, "degrade", BIKES, lq, "--scale", "2", "--seed", "3")[0] == 0
  assert _main(capsys, "restore", lq, out, "--scale", "2", "--max-frames", "9")[0] == 0
  read = lambda path: np.stack(list(video_io.read_frames(video_io.probe(str(path)))))[:9]
  hq, lq_frames, restored = (jnp.asarray(read(p), jnp.float32) / 255.0 for p in (BIKES, lq, out))
  bicubic = condition.lq_pixels_at(lq_frames[None] * 2 - 1, (1, *hq.shape))[0] * 0.5 + 0.5
  bicubic = jnp.round(bicubic * 255.0) / 255.0
  weights = lpips.load_weights()
  score = lambda x: (float(jnp.mean(fidelity.psnr(x, hq))),
                     float(jnp.mean(lpips.lpips(weights, x, hq))))
  (psnr_model, lpips_model), (psnr_bicubic, lpips_bicubic) = score(restored), score(bicubic)
  assert lpips_model < lpips_bicubic - 0.02, (lpips_model, lpips_bicubic)
  assert psnr_model > psnr_bicubic - 0.5, (psnr_model, psnr_bicubic)


def test_restore_frames_folder_and_image(tmp_path, capsys):
  frames_dir = tmp_path / "frames"
  rc, _, _ = _main(capsys, "restore", BIKES, frames_dir, *SMALL)
  assert rc == 0 and sorted(os.listdir(frames_dir))[0] == "000000.png"
  assert len(os.listdir(frames_dir)) == 9
  rc, _, _ = _main(capsys, "restore", frames_dir / "000003.png", tmp_path / "one.png", "--scale",
                   "1")
  assert rc == 0 and video_io.probe(str(tmp_path / "one.png")).kind == "image"


def test_restore_flags_map_to_their_options(monkeypatch):
  """Every flag lands in its own field; without flags the command uses the options' defaults."""
  seen = []
  monkeypatch.setattr(batch, "restore_jobs", lambda jobs, options, **kw: seen.append(
      (*jobs[0], options)))
  assert cli.main(["restore", "in.mp4", "out.mp4"]) == 0
  assert seen.pop() == ("in.mp4", "out.mp4", RestoreOptions())
  flags = ["--checkpoint", "ckpt", "--short-side", "96", "--colorfix", "adain", "--seed", "3",
           "--dtype", "bfloat16", "--dit-weights", "fp8", "--clip-frames", "13",
           "--clip-overlap", "5", "--max-frames", "40", "--encode-chunk", "12",
           "--decode-chunk", "2", "--tile", "256x384", "--tile-overlap", "32",
           "--sequence-parallel", "4", "--crf", "23", "--overwrite",
           "--dry-run", "--size-mode", "crop", "--scene-cuts", "auto", "--codec", "hevc",
           "--pix-fmt", "yuv420p10le", "--png-bits", "16", "--no-audio", "--resume",
           "--offload", "blocks", "--memory-budget", "7.5"]
  assert cli.main(["restore", "in.mp4", "out.mp4", *flags]) == 0
  assert seen.pop()[2] == RestoreOptions(
      checkpoint="ckpt", short_side=96, colorfix="adain", seed=3, dtype="bfloat16",
      dit_weights="fp8", clip_frames=13, clip_overlap=5, max_frames=40, encode_chunk=12,
      decode_chunk=2, tile=(256, 384), tile_overlap=32, sequence_parallel=4, crf=23, overwrite=True,
      dry_run=True, size_mode="crop", scene_cuts="auto", codec="hevc", pix_fmt="yuv420p10le",
      png_bits=16, audio=False, resume=True, offload="blocks", memory_budget=7.5)
  assert cli.main(["restore", "in.mp4", "out.mp4", "--scale", "2"]) == 0
  assert seen.pop()[2] == RestoreOptions(scale=2.0) and RestoreOptions().resolution == (720, 1280)
  assert cli.main(["restore", "in.mp4", "out.mp4", "--resolution", "540x960"]) == 0
  assert seen.pop()[2].resolution == (540, 960)
  with pytest.raises(ConfigError, match="at most one of resolution, short_side and scale"):
    RestoreOptions(short_side=96, scale=2.0)


def test_restore_dry_run_prints_the_plan(tmp_path, capsys):
  """With a budget the options fit, the memory plan keeps them and prints each stage's XLA
  estimate."""
  rc, stdout, _ = _main(capsys, "restore", BIKES, tmp_path / "x.mp4", *SMALL, "--dry-run",
                        "--memory-budget", "100")
  assert rc == 0 and not os.path.exists(tmp_path / "x.mp4")
  assert "clips: 3 of 5 frames" in stdout and "windows" in stdout
  assert ("memory plan (budget 100.00 GB): clips of 5 frames, offload none, VAE tiles none, "
          "DiT weights native; estimated peak") in stdout
  stages = [line for line in stdout.splitlines() if "(XLA: arguments" in line]
  assert [line.split(":")[0].strip() for line in stages] == ["encode", "dit", "decode"]


def test_a_budget_too_small_is_one_line_naming_the_smallest(tmp_path, capsys):
  out = tmp_path / "x.mp4"
  rc, _, err = _main(capsys, "restore", BIKES, out, *SMALL, "--memory-budget", "0.0001")
  assert rc == 2 and len(err.strip().splitlines()) == 1, err
  assert "memory budget 0.00 GB is too small for this input" in err
  assert "the most frugal plan (clips of 5 frames, offload blocks" in err
  assert re.search(r"pass --memory-budget \d+\.\d\d or more", err)
  assert os.listdir(tmp_path) == []


def test_restore_bad_inputs_are_one_line_errors(tmp_path, capsys):
  text = tmp_path / "notes.txt"
  text.write_text("not a video")
  empty = tmp_path / "empty"
  empty.mkdir()
  existing = tmp_path / "exists.mp4"
  existing.write_bytes(b"keep me")
  bad_ckpt = tmp_path / "bad_ckpt"
  bad_ckpt.mkdir()
  cases = [
      ((tmp_path / "missing.mp4", tmp_path / "o1.mp4"), "no such file"),
      ((text, tmp_path / "o2.mp4"), "not a readable video or image"),
      ((empty, tmp_path / "o3.mp4"), "holds no"),
      ((BIKES, tmp_path / "o4.mp4", "--resolution", "8x8", *CLIPS), "too small"),
      ((BIKES, tmp_path / "o5.mp4", "--checkpoint", tmp_path / "nope"),
       "not a seedvr2-jax checkpoint"),
      ((BIKES, tmp_path / "o6.mp4", "--checkpoint", bad_ckpt), "not a seedvr2-jax checkpoint"),
      ((BIKES, existing), "exists (pass --overwrite"),
      ((BIKES, tmp_path / "o7.png"), "an image output needs a one-frame input"),
  ]
  for args, message in cases:
    args = args if "--resolution" in args else (*args, *SMALL)
    rc, _, err = _main(capsys, "restore", *args)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
  assert existing.read_bytes() == b"keep me"
  assert sorted(os.listdir(tmp_path)) == ["bad_ckpt", "empty", "exists.mp4", "notes.txt"]


def test_sharded_restore_on_8_devices_equals_one_device(tmp_path, capsys):
  single = tmp_path / "single"
  rc, stdout, _ = _main(capsys, "restore", BIKES, single, *SMALL)
  assert rc == 0 and "devices: 1 (1 clip(s) at a time, each on 1 device(s))" in stdout
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  runs = (("data_parallel", (), "devices: 8 (8 clip(s) at a time, each on 1 device(s))"),
          ("sequence_parallel", ("--sequence-parallel", "2"),
           "devices: 8 (4 clip(s) at a time, each on 2 device(s))"))
  for name, extra, devices in runs:
    out = tmp_path / name
    run = subprocess.run([sys.executable, "-m", "seedvr2_jax.cli", "restore", BIKES, str(out),
                          *SMALL, *extra], check=True, env=env, cwd=ROOT, capture_output=True,
                         text=True)
    assert devices in run.stdout, run.stdout
    a = np.stack(list(video_io.read_frames(video_io.probe(str(single)))))
    b = np.stack(list(video_io.read_frames(video_io.probe(str(out)))))
    diff = np.abs(a.astype(int) - b)
    # Data parallel is bit-identical; splitting frames over devices reorders float sums: at most
    # 1 level in 0.01% of the bytes, as the README says (3 of 248,832 here).
    assert diff.max() <= (0 if name == "data_parallel" else 1) and (diff != 0).mean() <= 1e-4
