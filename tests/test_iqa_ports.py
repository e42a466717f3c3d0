"""MUSIQ, CLIP-IQA and DOVER ports against their reference implementations: small random-weight
configurations of the same architecture code, run once by the reference code
(tests/fixtures/iqa_parity/README.md); the weights load through the official state_dict names
from a file in an --iqa-weights folder."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seedvr2_jax import cli
from seedvr2_jax.convert import safetensors_io
from seedvr2_jax.data import video_io
from seedvr2_jax.errors import CheckpointError
from seedvr2_jax.metrics import clipiqa, dover, musiq, suite

PARITY = os.path.join(os.path.dirname(__file__), "fixtures", "iqa_parity")


def _fixture(name):
  with np.load(os.path.join(PARITY, f"{name}.npz")) as data:
    return dict(data)


def _weights_dir(tmp_path, fixture, file_name):
  """The fixture's weights, under their official names, as a file in an --iqa-weights folder."""
  tensors = {k[2:]: v.astype(np.float32) for k, v in fixture.items() if k.startswith("w/")}
  safetensors_io.save_file(tensors, str(tmp_path / file_name))
  return str(tmp_path)


CLIPIQA_SMALL = clipiqa.Config(layers=(1, 1, 1, 1), width=8, embed=32, pool_grid=2,
                               text_width=64, text_heads=2, text_layers=2)


def test_clipiqa_matches_pyiqa(tmp_path):
  fixture = _fixture("clipiqa")
  # The reference's tokenizer gave our prompt tokens (end-padded with zeros to 77).
  assert [tuple(int(t) for t in row if t) for row in fixture["tokens"]] == list(
      clipiqa.PROMPT_TOKENS)
  table = np.zeros((CLIPIQA_SMALL.vocab, CLIPIQA_SMALL.text_width), np.float16)
  table[fixture["token_rows"]] = fixture["w/token_embedding.weight"]  # only these rows are read
  fixture["w/token_embedding.weight"] = table
  params = clipiqa.load_weights(_weights_dir(tmp_path, fixture, "open_clip_model.safetensors"),
                                CLIPIQA_SMALL)
  score = clipiqa.make_clipiqa(params, CLIPIQA_SMALL)
  for i in range(2):  # 64x96 and 45x70 (odd sizes: floor pooling)
    got = score(fixture[f"image_{i}"].astype(np.float32) / 255.0)
    np.testing.assert_allclose(got, fixture[f"score_{i}"], atol=1e-5, rtol=0)


DOVER_SMALL = dover.Config(embed=8, depths=(2, 2, 2, 2), heads=(1, 1, 2, 2), hidden=8)


def test_dover_technical_matches_the_official_code(tmp_path):
  fixture = _fixture("dover")
  np.testing.assert_array_equal(dover.frame_indices(200, fixture["t_offsets"]),
                                fixture["frame_indices"])  # 3 x 32 frames at interval 2
  params = dover.load_weights(_weights_dir(tmp_path, fixture, "DOVER.safetensors"), DOVER_SMALL)
  technical = jax.jit(lambda p, x: jnp.mean(dover.technical_map(p, x, DOVER_SMALL)))
  for name in ("large", "small"):  # drawn fragment offsets; upsampled with the official grid
    clips = dover.fragment_clips(fixture[f"{name}_clip"], fixture[f"{name}_offsets_h"],
                                 fixture[f"{name}_offsets_w"])
    assert clips.shape == (3, 32, 224, 224, 3)
    raw = float(technical(params, clips))
    np.testing.assert_allclose(raw, fixture[f"{name}_raw"], atol=2e-5, rtol=0)
    np.testing.assert_allclose(dover.rescale(raw), fixture[f"{name}_score"], rtol=1e-3)
  assert dover.rescale(dover.TECHNICAL_MEAN) == 50.0


MUSIQ_SMALL = musiq.Config(hidden=16, mlp=32, heads=2, layers=2, grid=10, longer_sides=(64, 96))


def test_musiq_matches_pyiqa(tmp_path):
  fixture = _fixture("musiq")
  params = musiq.load_weights(_weights_dir(tmp_path, fixture, "musiq_koniq.safetensors"),
                              MUSIQ_SMALL)
  score = musiq.make_musiq(params, MUSIQ_SMALL)
  for i in range(2):  # 72x100 and 40x56: resized scales padded, the original cut as it is
    got = score(fixture[f"image_{i}"].astype(np.float32) / 255.0)
    np.testing.assert_allclose(got, fixture[f"score_{i}"], atol=1e-5, rtol=0)


def test_missing_and_mismatched_weights(tmp_path):
  with pytest.raises(CheckpointError, match="musiq weights not found in .*musiq_koniq_ckpt"):
    musiq.load_weights(str(tmp_path))
  with pytest.raises(CheckpointError, match="no --iqa-weights folder given"):
    musiq.load_weights(None)
  safetensors_io.save_file({"head.weight": np.zeros((1, 384), np.float32)},
                           str(tmp_path / "musiq_koniq.safetensors"))
  with pytest.raises(CheckpointError, match="expected tensors missing"):
    musiq.load_weights(str(tmp_path))


def test_evaluate_scores_musiq_from_the_weights_folder(tmp_path, monkeypatch, capsys):
  fixture = _fixture("musiq")
  folder = _weights_dir(tmp_path, fixture, "musiq_koniq.safetensors")
  monkeypatch.setitem(suite._LOADERS, "musiq", lambda d: musiq.load_weights(d, MUSIQ_SMALL))
  monkeypatch.setitem(suite._FRAME_MODELS, "musiq",
                      lambda params: musiq.make_musiq(params, MUSIQ_SMALL))
  image = tmp_path / "image.png"
  video_io.write_image(str(image), fixture["image_0"])
  assert cli.main(["evaluate", str(image), "--metrics", "musiq", "--iqa-weights", folder]) == 0
  assert capsys.readouterr().out.strip() == f"frames=1 musiq={float(fixture['score_0']):.4f}"
  assert cli.main(["evaluate", str(image), str(image), "--metrics", "ssim,musiq"]) == 0
  captured = capsys.readouterr()
  assert captured.out.strip() == "frames=1 ssim=1.0000"
  assert "note: musiq not computed: musiq weights not found" in captured.err


def test_evaluate_scores_dover_once_per_video(tmp_path, monkeypatch, capsys):
  """evaluate hands DOVER the frames and offsets of its sampling plan, once per video (the
  model itself is checked above; here a stand-in records what it is given)."""
  fixture = _fixture("dover")
  folder = _weights_dir(tmp_path, fixture, "DOVER.safetensors")
  monkeypatch.setitem(suite._LOADERS, "dover", lambda d: dover.load_weights(d, DOVER_SMALL))
  calls = []
  monkeypatch.setattr(suite.dover_lib, "make_dover",
                      lambda params: lambda *args: calls.append(args) or 42.0)
  video = fixture["small_clip"][:40]  # 40 frames: the 96 sampled indices wrap around (mod 40)
  for i, frame in enumerate(video):
    video_io.write_image(str(tmp_path / f"{i:03d}.png"), frame)
  out = tmp_path / "dover.json"
  assert cli.main(["evaluate", str(tmp_path), "--metrics", "dover", "--iqa-weights", folder,
                   "--json", str(out)]) == 0
  (clip, offsets_h, offsets_w), = calls
  indices, want_h, want_w = dover.sample_plan(40, 40, 56)
  assert len(indices) == 96 and indices.max() < 40
  np.testing.assert_array_equal(clip, video[indices])
  np.testing.assert_array_equal(offsets_h, want_h)
  np.testing.assert_array_equal(offsets_w, want_w)
  result = json.loads(out.read_text())
  assert result["dover"] == 42.0 and "dover" not in result["per_frame"]
  assert capsys.readouterr().out.strip() == "frames=40 dover=42.0000"
