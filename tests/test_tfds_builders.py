"""tfds builders from small local folders: splits, counts, shapes, stored pixels."""

import fractions
import os

import numpy as np
import pytest

from seedvr2_jax.data import png, tfds_builders, video_io
from seedvr2_jax.data.tfds_builders import common, samples
from seedvr2_jax.errors import InputError

MEDIA = os.path.join(os.path.dirname(__file__), "fixtures", "media")


def _frames(n: int, h: int, w: int, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _frame_folder(folder, clip: np.ndarray) -> None:
  os.makedirs(folder)
  for i, frame in enumerate(clip):
    video_io.write_image(os.path.join(folder, f"{i:08d}.png"), frame)


def _video(path, clip: np.ndarray) -> np.ndarray:
  """Writes an mp4 and returns the frames as decoded."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with video_io.VideoWriter(str(path), fractions.Fraction(24), crf=10) as writer:
    for frame in clip:
      writer.write(frame)
  return np.stack(list(video_io.read_frames(video_io.probe(str(path)))))


def _records(name: str, data_dir: str, split: str = "test") -> dict:
  source = tfds_builders.builder(name, data_dir=data_dir).as_data_source(split=split)
  return {r["name"].decode(): r for r in (source[i] for i in range(len(source)))}


def test_udm10_degraded_and_given(tmp_path):
  root, data_dir = tmp_path / "UDM10", str(tmp_path / "tfds")
  gt = {"calendar": _frames(5, 34, 50, 0), "city": _frames(3, 34, 50, 1)}
  for name, clip in gt.items():
    _frame_folder(root / "GT" / name, clip)
    _frame_folder(root / "BDx4" / name, clip[:, ::4, ::4])
  builder = tfds_builders.build("udm10", data_dir=data_dir, manual_dir=str(root))
  assert list(builder.info.splits) == ["test"]
  assert builder.info.splits["test"].num_examples == 2
  records = _records("udm10", data_dir)
  assert sorted(records) == ["calendar", "city"]
  for name, clip in gt.items():
    hq, lq = (png.decode_frames(records[name][k]) for k in ("hq", "lq"))
    cropped = clip[:, 1:33, 1:49]  # centre crop to multiples of 4
    np.testing.assert_array_equal(hq, cropped)
    assert lq.shape == (len(clip), 8, 12, 3)
    np.testing.assert_array_equal(lq, common.degrade_fixed(name, cropped))
    assert records[name]["fps"] == 25.0

  tfds_builders.build("udm10/given", data_dir=data_dir, manual_dir=str(root))
  given = _records("udm10/given", data_dir)
  for name, clip in gt.items():
    np.testing.assert_array_equal(png.decode_frames(given[name]["hq"]), clip)
    np.testing.assert_array_equal(png.decode_frames(given[name]["lq"]), clip[:, ::4, ::4])


def test_reds30_youhq40_and_videolq_layouts(tmp_path):
  data_dir = str(tmp_path / "tfds")
  reds = tmp_path / "REDS"
  for i in range(3):
    _frame_folder(reds / "val" / "val_sharp" / f"{i:03d}", _frames(2, 32, 32, i))
  tfds_builders.build("reds30", data_dir=data_dir, manual_dir=str(reds))
  records = _records("reds30", data_dir)
  assert sorted(records) == ["000", "001", "002"]
  assert png.decode_frames(records["001"]["lq"]).shape == (2, 8, 8, 3)

  youhq = tmp_path / "YouHQ40"
  decoded = _video(youhq / "GT" / "clip_a.mp4", _frames(6, 32, 48, 5))
  tfds_builders.build("youhq40", data_dir=data_dir, manual_dir=str(youhq))
  record = _records("youhq40", data_dir)["clip_a"]
  np.testing.assert_array_equal(png.decode_frames(record["hq"]), decoded)
  assert record["fps"] == 24.0

  videolq = tmp_path / "VideoLQ"
  _frame_folder(videolq / "000", _frames(3, 20, 28, 7))
  _video(videolq / "001.mp4", _frames(4, 24, 32, 8))
  builder = tfds_builders.build("videolq", data_dir=data_dir, manual_dir=str(videolq))
  assert set(builder.info.features) == {"lq", "name", "fps"}
  records = _records("videolq", data_dir)
  assert {n: png.decode_frames(r["lq"]).shape for n, r in records.items()} == {
      "000": (3, 20, 28, 3), "001": (4, 24, 32, 3)}


def test_missing_lq_clips_are_an_error(tmp_path):
  root = tmp_path / "SPMCS"
  _frame_folder(root / "GT" / "a", _frames(2, 16, 16, 0))
  with pytest.raises(InputError, match="no LQ folder"):
    tfds_builders.build("spmcs/given", data_dir=str(tmp_path / "tfds"), manual_dir=str(root))
  _frame_folder(root / "BDx4" / "b", _frames(2, 4, 4, 0))
  with pytest.raises(InputError, match="no LQ clip for 1 GT clip"):
    tfds_builders.build("spmcs/given", data_dir=str(tmp_path / "tfds"), manual_dir=str(root))


def test_sample_clips_from_the_fixture_videos(tmp_path, monkeypatch):
  monkeypatch.setenv("SEEDVR2_SAMPLES", MEDIA)
  assert samples.find_samples(None) == MEDIA
  data_dir = str(tmp_path / "tfds")
  builder = tfds_builders.build("seedvr2_samples/small", data_dir=data_dir)
  assert list(builder.info.splits) == ["train"]
  records = _records("seedvr2_samples/small", data_dir, "train")
  assert sorted(records) == ["bigbuckbunny_1s", "bikes_2s"]
  bikes = video_io.probe(os.path.join(MEDIA, "bikes_2s.mp4"))  # 640x272
  first = np.stack([f for _, f in zip(range(9), video_io.read_frames(bikes))])
  hq = png.decode_frames(records["bikes_2s"]["hq"])
  np.testing.assert_array_equal(hq, first[:, 72:200, 256:384])
  lq = png.decode_frames(records["bikes_2s"]["lq"])
  assert lq.shape == (9, 32, 32, 3)
  np.testing.assert_array_equal(lq, common.degrade_fixed("bikes_2s", hq))
  assert records["bigbuckbunny_1s"]["fps"] == 25.0
