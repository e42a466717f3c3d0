"""Restore as a product: exact output sizes, scene cuts, output formats and audio."""

import fractions
import os

import av
import jax
import numpy as np
import pytest

from seedvr2_jax import cli
from seedvr2_jax.data import audio_track, video_formats, video_io
from seedvr2_jax.errors import InputError
from seedvr2_jax.infer import clips, one_step, preprocess, restore, scenes
from seedvr2_jax.infer.options import RestoreOptions

MEDIA = os.path.join(os.path.dirname(__file__), "fixtures", "media")
BIKES = os.path.join(MEDIA, "bikes_2s.mp4")
BUNNY = os.path.join(MEDIA, "bigbuckbunny_1s.mp4")
FPS = fractions.Fraction(25)


def _read(path):
  return np.stack(list(video_io.read_frames(video_io.probe(str(path)))))


def _main(capsys, *argv):
  rc = cli.main([str(a) for a in argv])
  captured = capsys.readouterr()
  return rc, captured.out, captured.err


def _probe(path):
  """(muxer names, codec, pix_fmt, bits, width, height, frames, audio codecs) as FFmpeg reads
  the file back."""
  with av.open(str(path)) as container:
    stream = container.streams.video[0]
    frames = sum(1 for _ in container.decode(stream))
    ctx = stream.codec_context
    return (container.format.name, ctx.name, ctx.pix_fmt, video_formats.bit_depth(ctx.pix_fmt),
            ctx.width, ctx.height, frames, [a.codec_context.name for a in container.streams.audio])


def _gradient(frames=5, height=36, width=64):
  """A smooth horizontal ramp over a quarter of the range (uint16), shifting per frame."""
  ramp = np.linspace(0.3, 0.55, width)[None, :, None] * np.ones((height, 1, 3))
  return [np.round((ramp + 0.002 * i) * 65535).astype(np.uint16) for i in range(frames)]


def _write_av(path, muxer, video_codec, audio_codec=None, frames=10, size=(48, 40)):
  """A small test video (a moving ramp) with a 440 Hz tone in `audio_codec`, made with PyAV."""
  with av.open(str(path), "w", format=muxer) as out:
    video = out.add_stream(video_codec, rate=25)
    video.width, video.height, video.pix_fmt = *size, "yuv420p"
    audio = None if audio_codec is None else out.add_stream(audio_codec, rate=48000)
    for i in range(frames):
      ramp = (np.arange(size[0])[None, :, None] * 4 + 9 * i) % 256 * np.ones((size[1], 1, 3))
      out.mux(video.encode(av.VideoFrame.from_ndarray(ramp.astype(np.uint8), format="rgb24")))
    if audio is not None:
      tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(48000 * frames // 25) / 48000)
      for start in range(0, len(tone), 960):  # s16 frames; the encoder resamples them
        samples = (tone[None, start:start + 960] * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, start
        out.mux(audio.encode(frame))
      out.mux(audio.encode(None))
    out.mux(video.encode(None))


# Exact output sizes.

def test_pad_sizes_are_exact_and_the_padded_frame_holds_the_cropped_one():
  size = preprocess.output_size(138, 330, scale=2.0)
  assert size == (276, 660)
  assert preprocess.model_size(size, "pad") == (288, 672)  # padded, then cropped back
  assert preprocess.model_size(size, "crop") == (272, 656)  # the official crop
  assert preprocess.pad_box(276, 660) == (6, 6, 288, 672) and preprocess.pad_box(32, 48) == (
      0, 0, 32, 48)
  frames = jax.random.uniform(jax.random.key(0), (2, 23, 41, 3))
  size = (46, 82)
  pad = np.asarray(preprocess.preprocess(frames, size, "pad"))
  crop = np.asarray(preprocess.preprocess(frames, size, "crop"))
  assert pad.shape == (2, 48, 96, 3) and crop.shape == (2, 32, 80, 3)
  ptop, pleft, _, _ = preprocess.pad_box(*size)
  ctop, cleft, h, w = preprocess.crop_box(*size)
  # The crop is a window of the resized frame; the padded frame holds that frame unchanged.
  top, left = ptop + ctop, pleft + cleft
  np.testing.assert_array_equal(pad[:, top:top + h, left:left + w], crop)
  np.testing.assert_array_equal(pad[:, ptop - 1], pad[:, ptop + 1])  # a mirror, not a copy


def test_pad_and_crop_restore_equal_where_no_padding_is_needed():
  """At a multiple of 16 nothing is padded or cropped: both modes run the same program."""
  dit, vae, txt = restore.load_models(None, "float32", lambda *_: None)
  raw = np.stack(_read(BIKES)[:5, :64, :96])[None]
  keys = jax.random.split(jax.random.key(1), 1)
  outs = [np.asarray(one_step.Restorer(dit, vae, txt, RestoreOptions(size_mode=mode), (32, 48))(
      raw, keys)) for mode in ("pad", "crop")]
  assert outs[0].shape == (1, 5, 32, 48, 3)
  np.testing.assert_array_equal(outs[0], outs[1])


def test_restore_odd_frames_folder_and_image_to_exact_sizes(tmp_path, capsys):
  folder = tmp_path / "odd"
  folder.mkdir()
  for i, frame in enumerate(_read(BIKES)[:3, 100:123, 200:241]):  # 41x23: odd, not /16
    video_io.write_image(str(folder / f"{i:03d}.png"), np.ascontiguousarray(frame))
  out = tmp_path / "restored"
  rc, stdout, _ = _main(capsys, "restore", folder, out, "--scale", "2", "--png-bits", "16")
  assert rc == 0 and "82x46" in stdout
  frames = sorted(os.listdir(out))
  assert len(frames) == 3
  with av.open(str(out / frames[0])) as image:
    frame = next(image.decode(video=0))
    assert (frame.width, frame.height, frame.format.name) == (82, 46, "rgb48be")
    assert frame.to_ndarray().dtype == np.uint16 and frame.to_ndarray().std() > 100
  rc, _, _ = _main(capsys, "restore", folder / "001.png", tmp_path / "one.png", "--scale", "1")
  info = video_io.probe(str(tmp_path / "one.png"))
  assert rc == 0 and (info.width, info.height, info.frames) == (41, 23, 1)
  # 4:2:0 video needs even sides: the output is rounded up (with a note), not refused mid-run.
  rc, stdout, _ = _main(capsys, "restore", folder, tmp_path / "even.mp4", "--scale", "1")
  assert rc == 0 and "41x23 rounded up to 42x24" in stdout
  assert _probe(tmp_path / "even.mp4")[4:7] == (42, 24, 3)


# Scene cuts.

def _joined(tmp_path):
  """bikes_2s (a real cut at frame 30) then bigbuckbunny_1s, both at 160x68: joined at 50."""
  path = tmp_path / "joined.mp4"
  with video_io.VideoWriter(str(path), FPS, crf=12) as writer:
    for source in (BIKES, BUNNY):
      with av.open(source) as container:
        for frame in container.decode(video=0):
          writer.write(frame.reformat(160, 68, "rgb24").to_ndarray())
  return path


def test_scene_cuts_found_at_the_join_and_at_the_real_cut_only(tmp_path):
  frames = _read(_joined(tmp_path))
  assert len(frames) == 75
  assert scenes.find_cuts(frames) == [30, 50]
  assert scenes.find_cuts(_read(BUNNY)) == []


def test_clips_never_straddle_a_cut():
  plan = clips.plan_clips(75, 9, 3, cuts=(30, 50, 71))
  assert plan.length == 9
  for start, stop in zip(plan.starts, plan.stops):
    shot = max(c for c in (0, 30, 50, 71) if c <= start)
    assert stop <= min(c for c in (30, 50, 71, 75) if c > shot)
  assert (plan.starts[-1], plan.stops[-1]) == (71, 75)  # a 4-frame shot: padded to 9
  coverage = np.zeros(75)
  for start, stop, w in zip(plan.starts, plan.stops, plan.weights()):
    coverage[start:stop] += w[:stop - start]
    assert not w[stop - start:].any()
  np.testing.assert_allclose(coverage, 1.0, rtol=1e-6)
  assert clips.plan_clips(75, None, 3, cuts=(30,)).length == 45  # the longest shot
  # A clip's output never reaches across a cut: each clip adds 10 x its index.
  frames = [np.full((2, 2, 3), 100, np.uint8)] * 75
  shifted = lambda indices, batch: [np.stack([c + 10 * i for i, c in zip(indices, batch)])]
  out = np.stack(list(clips.stream_clips(frames, plan, shifted)))[:, 0, 0, 0].astype(int)
  first_of = {s: i for i, s in reversed(list(enumerate(plan.starts)))}
  for cut in (30, 50, 71):
    assert out[cut] == 100 + 10 * first_of[cut]  # the new shot's first clip alone


def test_dry_run_prints_the_cuts(tmp_path, capsys):
  rc, stdout, _ = _main(capsys, "restore", _joined(tmp_path), tmp_path / "x.mp4", "--dry-run",
                        "--scene-cuts", "auto", "--short-side", "32", "--clip-frames", "9",
                        "--clip-overlap", "3")
  assert rc == 0 and "scene cuts: [30, 50]" in stdout
  assert "starts [0, 6, 12, 18, 21, 30, 36, 41, 50, 56, 62, 66]" in stdout


# Formats and audio.

@pytest.mark.parametrize("name, codec, pix_fmt, expected", [
    ("a.mp4", None, None, ("h264", "yuv420p", 8)),
    ("a.mkv", "ffv1", "yuv444p10le", ("ffv1", "yuv444p10le", 10)),
    ("a.mov", "prores", None, ("prores", "yuv422p10le", 10)),
    ("a.webm", None, None, ("vp9", "yuv420p", 8)),
    ("b.mkv", "hevc", "yuv420p10le", ("hevc", "yuv420p10le", 10)),
])
def test_video_outputs_probe_as_what_they_claim(tmp_path, name, codec, pix_fmt, expected):
  with video_io.VideoWriter(str(tmp_path / name), FPS, codec=codec, pix_fmt=pix_fmt) as writer:
    for frame in _gradient():
      writer.write(frame)
  muxer = video_formats.CONTAINERS[os.path.splitext(name)[1]][0]
  got = _probe(tmp_path / name)
  assert muxer in got[0].split(",") and got[1:] == (*expected, 64, 36, 5, [])


def test_ten_bit_output_keeps_more_precision_than_eight_bit(tmp_path):
  errors = {}
  for pix_fmt in ("yuv444p", "yuv444p10le"):
    path = tmp_path / f"{pix_fmt}.mkv"
    with video_io.VideoWriter(str(path), FPS, codec="ffv1", pix_fmt=pix_fmt) as writer:
      for frame in _gradient():
        writer.write(frame)
    with av.open(str(path)) as container:
      got = [f.to_ndarray(format="rgb48le") for f in container.decode(video=0)]
    errors[pix_fmt] = np.abs(np.stack(got) / 65535.0 - np.stack(_gradient()) / 65535.0).mean()
  # Lossless codec: the error is the pixel format's quantisation (8 bits: about 1/4 of 1/255).
  assert errors["yuv444p10le"] < errors["yuv444p"] / 3, errors


def test_format_errors_are_one_line(tmp_path):
  for name, codec, pix_fmt, message in [
      ("a.webm", "h264", None, ".webm holds vp9, not h264"),
      ("a.mp4", "prores", None, ".mp4 holds h264/hevc/vp9, not prores"),
      ("a.webm", None, "yuv420p10le", "cannot write pixel format yuv420p10le"),
      ("a.avi", None, None, "not a video output"),
      ("a.mkv", None, "rgb99", "cannot write pixel format rgb99"),
  ]:
    with pytest.raises(InputError, match=message):
      video_formats.video_format(name, codec, pix_fmt)
  with pytest.raises(InputError, match="needs even frame sizes"):
    with video_io.VideoWriter(str(tmp_path / "odd.mp4"), FPS) as writer:
      writer.write(np.zeros((23, 41, 3), np.uint8))
  with video_io.VideoWriter(str(tmp_path / "odd.mkv"), FPS, pix_fmt="yuv444p") as writer:
    writer.write(np.zeros((23, 41, 3), np.uint8))
  assert _probe(tmp_path / "odd.mkv")[4:7] == (41, 23, 1)
  assert sorted(os.listdir(tmp_path)) == ["odd.mkv"]


def test_audio_is_copied_where_the_container_holds_it_and_transcoded_where_not(tmp_path):
  source = tmp_path / "wavpack.mkv"  # WavPack: Matroska holds it, mp4 and mov do not
  _write_av(source, "matroska", "libx264", "wavpack")
  with av.open(str(source)) as container:
    assert not audio_track.can_copy("mp4", container.streams.audio[0])
  for name, codec in (("a.mp4", "aac"), ("a.mkv", "wavpack"), ("a.webm", "opus")):
    with video_io.VideoWriter(str(tmp_path / name), FPS, audio_from=str(source)) as writer:
      for frame in _read(source):
        writer.write(frame)
    with av.open(str(tmp_path / name)) as container:
      audio = container.streams.audio[0]
      samples = sum(f.samples for f in container.decode(audio))
      assert audio.codec_context.name == codec
      assert abs(samples / audio.rate - 10 / 25) < 0.05  # the whole 0.4 s kept, no more


def test_restore_keeps_audio_that_mp4_cannot_hold(tmp_path, capsys):
  source = tmp_path / "in.mkv"
  _write_av(source, "matroska", "libx264", "wavpack", frames=6)
  out = tmp_path / "out.mp4"
  rc, stdout, _ = _main(capsys, "restore", source, out, "--scale", "1")
  assert rc == 0 and "audio aac" in stdout
  assert _probe(out)[1:] == ("h264", "yuv420p", 8, 48, 40, 6, ["aac"])
  rc, _, err = _main(capsys, "restore", source, tmp_path / "x.webm", "--codec", "prores")
  assert rc == 2 and ".webm holds vp9, not prores" in err
  rc, _, err = _main(capsys, "restore", source, tmp_path / "x", "--codec", "hevc")
  assert rc == 2 and "apply to video outputs" in err
