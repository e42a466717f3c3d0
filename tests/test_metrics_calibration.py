"""The metrics against pyiqa's published calibration values: its five ResultsCalibra pairs
(512x384 BMPs read from the pyiqa 0.1.16 wheel at test time; not vendored, licence), scored by
`seedvr2-jax evaluate`. The values are pyiqa's own results on them
(ResultsCalibra/calibration_summary.csv of IQA-PyTorch, rows "<metric>(ours)"); the vendored
DISTS alpha/beta against the DISTS_pytorch wheel's weights.pt."""

import json
import os

import numpy as np
import pytest

import legacy_torch
from seedvr2_jax import cli
from seedvr2_jax.metrics import dists

PAIRS = ("I03", "I04", "I06", "I08", "I19")
PYIQA = {  # pyiqa 0.1.16's values on the pairs, in PAIRS order
    "psnr": (21.1136, 20.9872, 27.0139, 23.3002, 21.6186),
    "ssim": (0.6997, 0.9978, 0.9989, 0.9671, 0.6522),
    "lpips": (0.7236, 0.2572, 0.0508, 0.0521, 0.4253),
    "dists": (0.4742, 0.1424, 0.0683, 0.0287, 0.3123),
    "niqe": (15.6538, 3.6549, 3.2342, 3.1922, 9.0722),
}
# The tolerances; the rounding of the published 4 decimals is inside them.
TOLERANCE = {"psnr": 0.01, "ssim": 1e-3, "lpips": 1e-3, "dists": 1e-3, "niqe": 0.1}


@pytest.fixture(scope="module")
def calibration_pairs(registry_wheel, tmp_path_factory):
  wheel = registry_wheel("pyiqa==0.1.16")
  root = tmp_path_factory.mktemp("calibra")
  for member in wheel.namelist():
    if member.startswith("ResultsCalibra/") and member.endswith(".bmp"):
      wheel.extract(member, root)
  return root / "ResultsCalibra"


def test_evaluate_reproduces_pyiqa_calibration(calibration_pairs, tmp_path, capsys):
  got = {name: [] for name in PYIQA}
  for pair in PAIRS:
    out = tmp_path / f"{pair}.json"
    assert cli.main(["evaluate", str(calibration_pairs / "dist_dir" / f"{pair}.bmp"),
                     str(calibration_pairs / "ref_dir" / f"{pair}.bmp"), "--metrics",
                     "psnr,ssim,lpips,dists,niqe", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for name in PYIQA:
      got[name].append(result[name])
    assert capsys.readouterr().out.startswith("frames=1 psnr=")
  for name, want in PYIQA.items():
    np.testing.assert_allclose(got[name], want, atol=TOLERANCE[name], rtol=0, err_msg=name)


def test_vendored_dists_weights_are_the_official_ones(registry_wheel, tmp_path):
  wheel = registry_wheel("DISTS_pytorch==0.1")
  wheel.extract("DISTS_pytorch/weights.pt", tmp_path)
  official = legacy_torch.load(os.path.join(tmp_path, "DISTS_pytorch", "weights.pt"))
  with np.load(dists.ALPHA_BETA) as vendored:
    for name in ("alpha", "beta"):
      assert official[name].shape == (1, 1475, 1, 1)
      np.testing.assert_array_equal(vendored[name], official[name].reshape(-1))
