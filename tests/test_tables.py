"""`seedvr2-jax tables` on CPU: the bundled model and bicubic on the sample clips, both output
files, and a run interrupted after its first clip resumed to the same numbers."""

import json
import os

import numpy as np
import pytest

from seedvr2_jax import cli
from seedvr2_jax.data import tfds_builders
from seedvr2_jax.tables import paper, protocol, report, run

MEDIA = os.path.join(os.path.dirname(__file__), "fixtures", "media")
ARGS = ["--datasets", "seedvr2_samples/small", "--max-clips", "1", "--max-frames", "5"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  folder = str(tmp_path_factory.mktemp("tfds"))
  os.environ["SEEDVR2_SAMPLES"] = MEDIA
  try:
    tfds_builders.build("seedvr2_samples/small", data_dir=folder)
  finally:
    del os.environ["SEEDVR2_SAMPLES"]
  return folder


def _numbers(results):
  """Every score of results.json (per frame, per clip, per dataset), in a fixed order."""
  out = []
  for entry in results["datasets"].values():
    for row in entry["rows"].values():
      out += [row["mean"][m] for m in sorted(row["mean"])]
      for clip in row["clips"].values():
        out += [v for m in sorted(clip["per_frame"]) for v in clip["per_frame"][m]]
  return np.array(out)


def test_tables_runs_and_resumes_to_the_same_numbers(data_dir, tmp_path, capsys, monkeypatch):
  whole = tmp_path / "whole"
  assert cli.main(["tables", "--data-dir", data_dir, "--out", str(whole), *ARGS]) == 0
  results = json.loads((whole / "results.json").read_text())
  entry = results["datasets"]["seedvr2_samples/small"]
  assert list(entry["rows"]) == ["bicubic", "toy"]
  toy = entry["rows"]["toy"]
  (clip, scores), = toy["clips"].items()
  assert scores["frames"] == 5 and scores["size"] == [128, 128]
  assert set(toy["mean"]) == {"psnr", "ssim", "lpips", "dists", "niqe"}
  assert len(os.listdir(whole / "outputs" / "seedvr2_samples-small" / "toy" / clip)) == 5
  assert results["weights_sha256"] and all(len(v) == 64 for v in results["weights_sha256"].values())
  assert results["versions"]["jax"] and results["protocol"]["scale"] == 4
  # The toy model's output is not bicubic's: the rows hold different numbers.
  assert toy["mean"]["dists"] != entry["rows"]["bicubic"]["mean"]["dists"]
  tables_md = (whole / "tables.md").read_text()
  assert "## Table 1: synthetic sets" in tables_md
  assert "| seedvr2_samples/small | toy |" in tables_md
  capsys.readouterr()

  # Interrupted after bicubic's clip (the model's restore fails), then rerun: bicubic's clip is
  # not redone and the results equal the uninterrupted run's.
  resumed = tmp_path / "resumed"
  real_restore = run._restore_clip

  def failing(row, *args):
    if row.label == "toy":
      raise KeyboardInterrupt
    return real_restore(row, *args)
  monkeypatch.setattr(run, "_restore_clip", failing)
  with pytest.raises(KeyboardInterrupt):
    cli.main(["tables", "--data-dir", data_dir, "--out", str(resumed), *ARGS])
  assert not (resumed / "results.json").exists()
  monkeypatch.setattr(run, "_restore_clip", real_restore)
  capsys.readouterr()
  assert cli.main(["tables", "--data-dir", data_dir, "--out", str(resumed), *ARGS]) == 0
  out = capsys.readouterr().out
  assert f"bicubic {clip}: done before, skipped" in out and f"toy {clip}: 5 frames" in out
  again = json.loads((resumed / "results.json").read_text())
  np.testing.assert_array_equal(_numbers(again), _numbers(results))

  # Another setting in the same folder is refused, in one line.
  assert cli.main(["tables", "--data-dir", data_dir, "--out", str(resumed), *ARGS[:-1], "4"]) == 2
  err = capsys.readouterr().err
  assert "other settings (max_frames)" in err and len(err.strip().splitlines()) == 1


def test_tables_bad_arguments(data_dir, tmp_path, capsys):
  for args, message in (
      (["--datasets", "vimeo"], "unknown dataset 'vimeo'"),
      (["--datasets", "udm10"], "dataset udm10 not found"),
      (["--checkpoint", str(tmp_path / "none")], "is not a checkpoint directory"),
      (["--max-clips", "0"], "need --max-clips and --max-frames >= 1")):
    assert cli.main(["tables", "--data-dir", data_dir, "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_output_sizes_and_the_report_layout():
  assert protocol.output_request(180, 320, 720) == {"scale": 4.0}
  assert protocol.output_request(270, 480, 720) == {"short_side": 720}  # 1080p GT -> 720p
  assert protocol.output_request(360, 640, 1080) == {"short_side": 1080}  # VideoLQ cap
  assert protocol.output_size(270, 480, 720) == (720, 1280)
  hq = np.random.default_rng(0).integers(0, 256, (2, 1080, 1920, 3), np.uint8)
  assert protocol.resize_and_crop(hq, (720, 1280)).shape == (2, 720, 1280, 3)
  assert protocol.resize_and_crop(hq[:, :100, :200], (100, 200)).shape == (2, 96, 192, 3)
  assert paper.published("1", "udm10", paper.method_of("SeedVR2-7B"))["psnr"] == 26.26
  assert paper.published("4", "spmcs", paper.method_of("bicubic"))["niqe"] == 9.105
  results = {"unavailable_metrics": {"musiq": "no weights"}, "datasets": {"udm10": {
      "name": "udm10", "has_reference": True, "rows": {"SeedVR2-7B": {
          "mean": {"psnr": 26.0, "ssim": 0.8, "lpips": 0.2, "dists": 0.1, "niqe": 4.5},
          "clips": {"a": {}}, "frames": 10, "restore_seconds": 2.0}}}}}
  text = report.markdown(results)
  assert "| udm10 | SeedVR2-7B | 26.00 / 26.26 (−0.26) | 0.8000 / 0.7980 (+0.0020) |" in text
  assert "| 4.5000 / 4.5180 (−0.0180) | – / 53.28 |" in text and "musiq: no weights" in text
