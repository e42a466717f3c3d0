"""Training degradations: kernels, resize, JPEG and codec round trips, the clip pipeline
(determinism, temporal consistency, severity) and `seedvr2-jax degrade` on a real video."""

import os

import numpy as np
import pytest

from conftest import FIXTURES
from seedvr2_jax import cli
from seedvr2_jax.data import compression, degrade_file, degradations, kernels, video_io
from seedvr2_jax.data.resize import resize, taps
from seedvr2_jax.errors import ConfigError, InputError

BIKES = os.path.join(FIXTURES, "media", "bikes_2s.mp4")


@pytest.fixture(scope="module")
def bikes():
  """(50, 272, 640, 3) uint8 real frames."""
  return np.stack(list(video_io.read_frames(video_io.probe(BIKES))))


@pytest.fixture(scope="module")
def crop(bikes):
  """(5, 128, 128, 3): a textured 128x128 crop of the first 5 frames."""
  return np.ascontiguousarray(bikes[:5, 72:200, 256:384])


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
  err = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
  return 10 * np.log10(255.0 ** 2 / err)


def _quiet(**updates):
  """A config without noise or video compression (and no jitter unless given)."""
  return degradations.override(degradations.default_config(), {
      "noise_range": (0.0, 0.0), "poisson_scale_range": (0.0, 0.0), "noise_range2": (0.0, 0.0),
      "poisson_scale_range2": (0.0, 0.0), "video.prob": 0.0, **updates})


# Kernels


def test_random_kernels_are_normalised_odd_and_point_symmetric():
  rng = np.random.default_rng(0)
  for sinc_prob in (0.0, 1.0):
    for _ in range(40):
      k = kernels.random_blur(rng, kernels.KERNEL_SIZES, sinc_prob, kernels.KERNEL_TYPES,
                              (1,) * 6, (0.2, 3.0), (0.5, 4.0), (1.0, 2.0))
      assert k.shape[0] == k.shape[1] and k.shape[0] in kernels.KERNEL_SIZES
      np.testing.assert_allclose(k.sum(), 1.0, atol=1e-9)
      np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-12)  # filtering = convolution


@pytest.mark.parametrize("make", [
    lambda theta: kernels.gaussian(21, 2.0, 2.0, theta),
    lambda theta: kernels.generalized_gaussian(21, 2.0, 2.0, theta, 0.7),
    lambda theta: kernels.plateau(21, 2.0, 2.0, theta, 1.5),
    lambda theta: kernels.sinc(21, np.pi / 3)])
def test_isotropic_kernels_are_rotation_symmetric(make):
  k = make(0.0)
  for other in (np.rot90(k), k.T, k[::-1], make(0.7)):
    np.testing.assert_allclose(other, k, atol=1e-12)
  # Radial: equal at equal distance from the centre (3,4,5 triangle vs. the axis).
  np.testing.assert_allclose(k[10 + 3, 10 + 4], k[10, 10 + 5], rtol=1e-9)


def test_gaussian_values_and_anisotropy():
  x = np.arange(-7, 8)
  g = np.exp(-x ** 2 / (2 * 1.5 ** 2))
  np.testing.assert_allclose(kernels.gaussian(15, 1.5, 1.5, 0.0), np.outer(g, g) / g.sum() ** 2,
                             rtol=1e-12)
  wide = kernels.gaussian(21, 2.0, 1.0, 0.0)  # sigma_x: along columns
  cols, rows = wide.sum(axis=0), wide.sum(axis=1)
  offsets = np.arange(-10, 11)
  np.testing.assert_allclose((cols * offsets ** 2).sum(), 4.0, rtol=1e-4)  # variances
  np.testing.assert_allclose((rows * offsets ** 2).sum(), 1.0, rtol=1e-4)
  # A quarter turn swaps the axes; beta = 1 is the plain Gaussian.
  np.testing.assert_allclose(kernels.gaussian(21, 2.0, 1.0, np.pi / 2), wide.T, atol=1e-12)
  np.testing.assert_allclose(kernels.generalized_gaussian(21, 3.0, 1.0, 0.4, 1.0),
                             kernels.gaussian(21, 3.0, 1.0, 0.4), atol=1e-12)


def test_sinc_is_a_lowpass_with_its_cutoff():
  k = kernels.sinc(21, np.pi / 3)
  response = np.abs(np.fft.fft2(k, (256, 256)))  # frequency index f <-> omega = 2 pi f / 256
  assert response[0, 0] == pytest.approx(1.0)
  assert response[0, 20] > 0.9  # omega ~ 0.16 pi: passed
  assert response[0, 80] < 0.1 and response[57, 57] < 0.1  # omega ~ 0.63 pi: stopped
  assert k.min() < 0  # ringing lobes


# Resize, JPEG, video codecs


def test_resize_matches_torch_interpolate_semantics():
  ramp = np.arange(8, dtype=np.float32)[None, :].repeat(3, 0)  # (3, 8): columns 0..7
  up = resize(ramp[None], (3, 16), "bilinear")[0, 0]
  expected = np.clip((np.arange(16) + 0.5) / 2 - 0.5, 0, 7)  # align_corners=False, clamped
  np.testing.assert_allclose(up, expected, atol=1e-6)
  # Keys' cubic with a = -0.75 (torch, OpenCV): the x2 weights at a quarter-pixel offset.
  index, weight = taps(8, 16, "bicubic")
  np.testing.assert_array_equal(index[3], [0, 1, 2, 3])
  np.testing.assert_allclose(weight[3], [-0.10546875, 0.87890625, 0.26171875, -0.03515625],
                             atol=1e-7)
  np.testing.assert_array_equal(taps(8, 16, "bicubic")[0][0], [0, 0, 0, 1])  # clamped border
  x = np.random.default_rng(0).random((2, 3, 8, 12), dtype=np.float32)
  pooled = x.reshape(2, 3, 4, 2, 6, 2).mean(axis=(3, 5))
  np.testing.assert_allclose(resize(x, (4, 6), "area"), pooled, atol=1e-6)
  for mode in ("area", "bilinear", "bicubic"):
    _, weight = taps(37, 11, mode)
    np.testing.assert_allclose(weight.sum(axis=1), 1.0, atol=1e-6)


def test_jpeg_quality_tables_and_round_trip(crop):
  luma, chroma = compression.quant_tables(np.array([50, 100, 25]))
  assert luma[0, 0, 0] == 16 and luma[0, 7, 7] == 99 and chroma[0, 0, 0] == 17
  assert (luma[1] == 1).all() and (chroma[1] == 1).all()
  assert luma[2, 0, 0] == 32 and luma[2, 7, 7] == 198
  x = crop[:1].transpose(0, 3, 1, 2).astype(np.float32) / 255
  psnrs = [_psnr(compression.jpeg(x, np.array([q])) * 255, x * 255) for q in (100, 90, 60, 30, 10)]
  assert psnrs[0] > 45 and psnrs == sorted(psnrs, reverse=True) and psnrs[-1] < psnrs[0] - 10
  both = compression.jpeg(np.concatenate([x, x]), np.array([95, 10]))  # quality per frame
  np.testing.assert_array_equal(both[0], compression.jpeg(x, np.array([95]))[0])
  assert np.abs(both[0] - both[1]).mean() > 2 / 255
  np.testing.assert_array_equal(np.rint(both * 255) / 255, both)  # 8-bit levels


@pytest.mark.parametrize("spec", [
    compression.VideoSpec("libx264", crf=30), compression.VideoSpec("libx265", crf=30),
    compression.VideoSpec("mpeg4", bpp=1.0), compression.VideoSpec("libx264", bpp=1.0)])
def test_video_round_trip_keeps_frames_and_odd_sizes(crop, spec):
  frames = np.ascontiguousarray(crop[:, :33, :47])
  out = compression.video(frames, spec)
  assert out.shape == frames.shape and out.dtype == np.uint8
  assert 22 < _psnr(out, frames) < 60  # lossy, yet close
  np.testing.assert_array_equal(out, compression.video(frames, spec))


# The clip pipeline


def test_degrade_clip_shape_and_determinism(crop):
  cfg = degradations.default_config()
  lq = degradations.degrade_clip(crop, cfg, 3)
  assert lq.shape == (5, 32, 32, 3) and lq.dtype == np.uint8
  np.testing.assert_array_equal(lq, degradations.degrade_clip(crop, cfg, 3))
  np.testing.assert_array_equal(lq, degradations.degrade_clip(crop, cfg,
                                                              np.random.default_rng(3)))
  assert np.abs(lq.astype(int) - degradations.degrade_clip(crop, cfg, 4)).mean() > 2


def test_frames_in_chunks_equal_the_whole_clip(crop, monkeypatch):
  cfg = degradations.override(degradations.default_config(), {"jitter": 0.3})

  def draw():
    rng = np.random.default_rng(7)
    return degradations.sample_params(cfg, rng, (128, 128), frames=5), rng.spawn(5)

  params, rngs = draw()
  whole = degradations.degrade_frames(crop, params, rngs)
  params, rngs = draw()  # fresh generators: the caller splits the clip
  parts = [degradations.degrade_frames(crop[a:b], params.frames(a, b), rngs[a:b])
           for a, b in ((0, 2), (2, 5))]
  np.testing.assert_array_equal(np.concatenate(parts), whole)
  monkeypatch.setattr(degradations, "_CHUNK_PIXELS", 2 * 128 * 128)  # 2 frames at a time inside
  params, rngs = draw()
  np.testing.assert_array_equal(degradations.degrade_frames(crop, params, rngs), whole)


def test_one_parameter_draw_per_clip(crop):
  static = np.repeat(crop[:1], 5, axis=0)  # a still scene
  for seed in range(3):
    lq = degradations.degrade_clip(static, _quiet(), seed)
    for frame in lq[1:]:  # same kernels, sizes and JPEG qualities for every frame
      np.testing.assert_array_equal(frame, lq[0])
  rng = np.random.default_rng(0)
  params = degradations.sample_params(_quiet(jitter=0.5), rng, (128, 128), frames=5)
  assert len(set(params.stage1.jpeg_t)) > 1  # jitter: JPEG quality varies per frame...
  lq = degradations.degrade_clip(static, _quiet(jitter=0.5), 0)
  assert any(not np.array_equal(frame, lq[0]) for frame in lq[1:])  # ...and so do the frames
  # With noise and codec, a still scene stays much closer to itself than to another draw.
  cfg = degradations.default_config()
  a, b = (degradations.degrade_clip(static, cfg, s).astype(float) for s in (1, 2))
  assert np.abs(a[1:] - a[:1]).mean() < 0.5 * np.abs(a - b).mean()


def test_quality_falls_with_severity(crop):
  hq = crop.transpose(0, 3, 1, 2).astype(np.float32)

  def mean_psnr(name: str) -> float:
    cfg = degradations.preset(name)
    scores = []
    for seed in range(8):
      lq = degradations.degrade_clip(crop, cfg, seed).transpose(0, 3, 1, 2).astype(np.float32)
      scores.append(_psnr(np.clip(resize(lq, (128, 128), "bicubic"), 0, 255), hq))
    return float(np.mean(scores))

  light, default, heavy = (mean_psnr(n) for n in ("light", "realesrgan", "heavy"))
  assert light > default + 1 > heavy + 2, (light, default, heavy)


def test_bad_inputs_and_configs(crop):
  cfg = degradations.default_config()
  with pytest.raises(InputError, match="not a multiple of the scale 4"):
    degradations.degrade_clip(crop[:, :126], cfg, 0)
  with pytest.raises(InputError, match="uint8"):
    degradations.degrade_clip(crop.astype(np.float32), cfg, 0)
  with pytest.raises(ConfigError, match="did you mean noise_range"):
    degradations.override(cfg, {"nosie_range": (1, 2)})
  with pytest.raises(ConfigError, match="video.crf_prob"):
    degradations.override(cfg, {"video.crf_prob": 1.5})
  with pytest.raises(ConfigError, match="unknown degradation preset 'medium'"):
    degradations.preset("medium")
  with pytest.raises(AttributeError):
    cfg.noise_rnage = (1, 2)  # locked: a typo cannot add a key
  bad = degradations.default_config()
  bad.resize_prob = (0.5, 0.5)
  with pytest.raises(ConfigError, match="resize_prob"):
    degradations.degrade_clip(crop, bad, 0)


# `seedvr2-jax degrade`


def _decode(path: str) -> np.ndarray:
  return np.stack(list(video_io.read_frames(video_io.probe(path))))


def test_degrade_file_writes_the_lq_video(tmp_path, capsys):
  out = str(tmp_path / "lq.mp4")
  assert cli.main(["degrade", BIKES, out, "--config", "realesrgan", "--seed", "5"]) == 0
  assert "50 frames of 160x68" in capsys.readouterr().out
  info = video_io.probe(out)
  assert (info.kind, info.width, info.height, info.frames, info.fps) == ("video", 160, 68, 50, 25)
  again = str(tmp_path / "again.mp4")
  degrade_file.degrade_file(BIKES, again, degradations.default_config(), 5)
  np.testing.assert_array_equal(_decode(again), _decode(out))
  assert not np.array_equal(_decode(out)[0], _decode(out)[-1])  # a moving scene, not one frame
  with pytest.raises(InputError, match="already exists"):
    degrade_file.degrade_file(BIKES, out, degradations.default_config(), 5)
  assert sorted(os.listdir(tmp_path)) == ["again.mp4", "lq.mp4"]  # no partial files left


def test_degraded_file_is_the_codec_pass(bikes, tmp_path, capsys):
  # LQ frames of at least MIN_CODED_SIZE: the file holds the drawn codec's own stream, so it
  # decodes to `degrade_clip` of the input (640x272 is a multiple of 2 x scale: no crop).
  cfg = degradations.override(degradations.default_config(), {"scale": 2})
  out = str(tmp_path / "lq.mp4")
  assert cli.main(["degrade", BIKES, out, "--config", "realesrgan", "--seed", "9", "--scale",
                   "2"]) == 0
  assert "50 frames of 320x136 (preset realesrgan, scale 2, seed 9)" in capsys.readouterr().out
  assert degradations.sample_params(cfg, np.random.default_rng(9), (272, 640),
                                    frames=50).video is not None
  np.testing.assert_array_equal(_decode(out), degradations.degrade_clip(bikes, cfg, 9))
  with pytest.raises(InputError, match="--scale must be a positive integer"):
    degrade_file.degrade_with_preset(BIKES, str(tmp_path / "x.mp4"), "realesrgan", scale=0)


def test_degrade_file_images_and_errors(bikes, tmp_path):
  image = str(tmp_path / "hq.png")
  video_io.write_image(image, np.ascontiguousarray(bikes[0, :50, :70]))
  out = str(tmp_path / "lq.png")
  params, frames = degrade_file.degrade_file(image, out, degradations.preset("light"), 1)
  lq = next(video_io.read_frames(video_io.probe(out)))
  assert frames == 1 and lq.shape == (12, 17, 3) and params.video is None  # 48x68 crop / 4
  first = lq.copy()
  degrade_file.degrade_file(image, out, degradations.preset("light"), 1, overwrite=True)
  np.testing.assert_array_equal(next(video_io.read_frames(video_io.probe(out))), first)
  with pytest.raises(InputError, match="no such file"):
    degrade_file.degrade_file(str(tmp_path / "missing.mp4"), str(tmp_path / "x.mp4"),
                              degradations.default_config(), 0)
  with pytest.raises(InputError, match="must end in .mp4"):
    degrade_file.degrade_file(BIKES, str(tmp_path / "x.png"), degradations.default_config(), 0)
  assert sorted(os.listdir(tmp_path)) == ["hq.png", "lq.png"]
