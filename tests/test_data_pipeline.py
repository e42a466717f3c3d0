"""Grain training pipeline: sources, buckets, sharding, resumption, workers, corrupt files,
global arrays, latent precompute."""

import fractions
import json
import logging
import os
import subprocess
import sys
import textwrap
import types

import grain
import jax
import numpy as np
import pytest
from flax import nnx

from seedvr2_jax.data import (batching, bucketing, degradations, precompute, sources,
                              tfds_builders, video_io)
from seedvr2_jax.diffusion import condition
from seedvr2_jax.errors import ConfigError, InputError
from seedvr2_jax.models.vae import codec

MEDIA = os.path.join(os.path.dirname(__file__), "fixtures", "media")
FPS = fractions.Fraction(25)


def _clip(frames: int, h: int, w: int, seed: int, colour=None) -> np.ndarray:
  """A moving-gradient clip (or a solid colour) as (T, H, W, 3) uint8."""
  if colour is not None:
    return np.broadcast_to(np.asarray(colour, np.uint8), (frames, h, w, 3)).copy()
  t, y, x = np.meshgrid(np.arange(frames), np.arange(h), np.arange(w), indexing="ij")
  phase = np.stack([x + 3 * t + seed, y + 2 * t, x + y + 5 * seed], -1)
  return (127 + 100 * np.sin(phase / 7.0)).astype(np.uint8)


def _write_video(path: str, clip: np.ndarray) -> str:
  with video_io.VideoWriter(path, FPS, crf=10) as writer:
    for frame in clip:
      writer.write(frame)
  return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> str:
  """6 small videos (two sizes, nested) and 2 images."""
  root = tmp_path_factory.mktemp("media")
  os.makedirs(root / "nested")
  for i in range(4):
    _write_video(str(root / f"v{i}.mp4"), _clip(12, 48, 64, i))
  for i in range(2):
    _write_video(str(root / "nested" / f"w{i}.mp4"), _clip(10, 64, 96, 10 + i))
  for i in range(2):
    video_io.write_image(str(root / f"img{i}.png"), _clip(1, 40, 40, 20 + i)[0])
  return str(root)


def _cfg(sources_spec: str, buckets=((5, 32, 32), (1, 32, 32), (9, 48, 64)), **kw):
  cfg = batching.default_config()
  cfg.update(dict(sources=sources_spec, buckets=buckets, degradation="light", **kw))
  return cfg


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_resume_from_state_gives_the_same_batches(media):
  cfg = _cfg(media)
  full = _take(batching.make_batches(cfg, batch_size=2, seed=3, process_index=0,
                                     process_count=1), 5)
  assert len({b["hq"].shape[1:4] for b in full}) >= 2  # several buckets
  for b in full:
    t, h, w = b["hq"].shape[1:4]
    assert b["lq"].shape == (2, t, h // 4, w // 4, 3) and b["lq"].dtype == np.uint8
    assert len(set(b["bucket"].tolist())) == 1
  it = batching.make_batches(cfg, batch_size=2, seed=3, process_index=0, process_count=1)
  _take(it, 2)
  state = it.get_state()
  assert state == {"step": 2}
  resumed = batching.make_batches(cfg, batch_size=2, seed=3, process_index=0, process_count=1)
  resumed.set_state(state)
  for a, b in zip(full[2:], _take(resumed, 3)):
    _assert_same(a, b)
  other_seed = next(batching.make_batches(cfg, batch_size=2, seed=4, process_index=0,
                                          process_count=1))
  assert not np.array_equal(other_seed["hq"], full[0]["hq"])


def test_two_hosts_see_disjoint_data_and_agree_on_buckets(media):
  keys = [{sources.FolderSource(media, process_index=h, process_count=2)[i].key
           for i in range(4)} for h in range(2)]
  assert not keys[0] & keys[1]
  assert keys[0] | keys[1] == set(sources.list_media(media))
  cfg = _cfg(media, bucket_weights=(1, 1, 2))
  hosts = [batching.make_batches(cfg, batch_size=4, seed=0, process_index=h, process_count=2)
           for h in range(2)]
  for step in range(6):
    b0, b1 = next(hosts[0]), next(hosts[1])
    assert b0["hq"].shape == b1["hq"].shape == (2, *hosts[0].bucket(step), 3)
    np.testing.assert_array_equal(b0["bucket"], b1["bucket"])
    assert not np.array_equal(b0["hq"], b1["hq"])


def test_bucket_schedule_counts_earlier_draws():
  weights = np.asarray([0.2, 0.3, 0.5])
  schedule = bucketing.BucketSchedule([(0, weights)], seed=1)
  steps = range(4090, 4110)  # across a chunk boundary
  draws = [schedule.bucket(s) for s in range(4110)]
  for s in steps:
    assert schedule.occurrence(s) == draws[:s].count(draws[s])
  assert abs(np.mean(np.asarray(draws) == 2) - 0.5) < 0.03
  # the draws of Generator.choice with these weights
  np.testing.assert_array_equal(draws[:4096], np.random.default_rng([1, 0x5EED, 0]).choice(
      3, 4096, p=weights))


def test_bucket_stages_grow_the_clips(media):
  """Progressive growth: images first, then 5-frame clips, then a mix with 9-frame clips."""
  cfg = _cfg(media, bucket_weights=(0, 1, 0), bucket_stages=((3, (1, 0, 0)), (5, (1, 0, 3))))
  batches = batching.make_batches(cfg, batch_size=2, seed=0, process_index=0, process_count=1)
  frames = [next(batches)["hq"].shape[1] for _ in range(7)]
  assert frames[:5] == [1, 1, 1, 5, 5] and set(frames[5:]) <= {5, 9}, frames
  schedule = bucketing.BucketSchedule(bucketing.bucket_stages(cfg, 3), seed=0)
  draws = [schedule.bucket(s) for s in range(4100)]
  assert set(draws[:3]) == {1} and set(draws[3:5]) == {0}
  assert abs(np.mean(np.asarray(draws[5:]) == 2) - 0.75) < 0.03
  for s in (4, 4095, 4099):
    assert schedule.occurrence(s) == draws[:s].count(draws[s])
  for stages, message in ((((0, (1, 1, 1)),), "steps must increase"),
                          (((4, (1, 1)),), "need 3 non-negative weights"),
                          ((4,), "expected (step, weights)")):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
      bucketing.bucket_stages(_cfg(media, bucket_stages=stages), 3)


def test_sources_mix_by_weight_and_tfds_source(tmp_path):
  for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
    os.makedirs(tmp_path / name)
    for i in range(2):
      _write_video(str(tmp_path / name / f"{i}.mp4"), _clip(6, 32, 32, 0, colour))
  cfg = _cfg(f"{tmp_path / 'red'}*3,{tmp_path / 'blue'}", buckets=((1, 32, 32),))
  hq = np.concatenate([b["hq"] for b in _take(
      batching.make_batches(cfg, batch_size=8, seed=0, process_index=0, process_count=1), 8)])
  red = np.mean(hq[:, 0, 16, 16, 0] > 128)
  assert 0.6 < red < 0.9  # 3:1 mix
  data_dir = str(tmp_path / "tfds")
  tfds_builders.build("seedvr2_samples/small", data_dir=data_dir, manual_dir=MEDIA)
  source = sources.TfdsSource("seedvr2_samples/small", data_dir=data_dir)
  assert len(source) == 2 and (source[0].frames, source[0].height, source[0].width) == (9, 128,
                                                                                         128)
  np.testing.assert_array_equal(source[1].read(2, 3), source[1].read(0, 5)[2:])
  cfg = _cfg("tfds:seedvr2_samples/small:train", buckets=((5, 64, 64),), tfds_data_dir=data_dir)
  batch = next(batching.make_batches(cfg, batch_size=2, seed=0, process_index=0,
                                     process_count=1))
  assert batch["hq"].shape == (2, 5, 64, 64, 3) and batch["lq"].shape == (2, 5, 16, 16, 3)


def test_seek_read_matches_decoding_from_the_start():
  info = video_io.probe(os.path.join(MEDIA, "bikes_2s.mp4"))
  frames = [f for _, f in zip(range(35), video_io.read_frames(info))]
  np.testing.assert_array_equal(np.stack(video_io.read_video(info, 30, 5)), np.stack(frames[30:]))


def test_resize_mode_uses_the_nearest_aspect_bucket(media):
  buckets = ((1, 32, 64), (1, 32, 32))
  wide = sources.Clip(None, 0, 1, 64, 128)
  square = sources.Clip(None, 0, 1, 40, 40)
  assert bucketing.nearest_aspect(wide, buckets, 1) == 0
  assert bucketing.nearest_aspect(square, buckets, 1) == 1
  frame = _clip(1, 64, 96, 3)
  stub = sources.Clip(type("Stub", (), {"read": lambda self, i, start, span: frame})(), 0, 1, 64,
                      96)
  example = batching.PixelExample(1, True, degradations.preset("light"))(
      stub, (1, 32, 48), np.random.default_rng(0))
  area = frame[0].astype(np.float32).reshape(32, 2, 48, 2, 3).mean((1, 3)).round()
  np.testing.assert_array_equal(example["hq"][0], area)  # the whole frame, downscaled 2x
  it = batching.make_batches(_cfg(media, buckets=((1, 32, 48), (1, 32, 32)), resize=True),
                             batch_size=2, seed=0, process_index=0, process_count=1)
  for _ in range(3):
    batch = next(it)
    assert batch["hq"].shape[2:4] == it.bucket(it.step - 1)[1:]


def test_corrupt_files_are_skipped_and_counted(media, tmp_path, caplog):
  root = tmp_path / "data"
  os.makedirs(root)
  good = [_write_video(str(root / f"good{i}.mp4"), _clip(8, 32, 32, i)) for i in range(3)]
  (root / "notes.mp4").write_text("not a video")
  with open(good[0], "rb") as f:
    data = f.read()
  (root / "truncated.mp4").write_bytes(data[:len(data) // 3])
  with caplog.at_level(logging.WARNING, logger="seedvr2_jax.data"):
    it = batching.make_batches(_cfg(str(root), buckets=((5, 32, 32),)), batch_size=2, seed=0,
                               process_index=0, process_count=1)
  warnings = [r.getMessage() for r in caplog.records]
  assert len(warnings) == 1 and "notes.mp4" in warnings[0] and "truncated.mp4" in warnings[0]
  # Corrupted after indexing: found while decoding, replaced by other clips and counted.
  with open(good[1], "wb") as f:
    f.write(b"\0" * 100)
  batches = _take(it, 4)
  assert all(b["hq"].shape == (2, 5, 32, 32, 3) for b in batches)
  metrics = it.metrics()
  assert metrics["data/skipped_files"] == 2 and metrics["data/decode_failures"] >= 1


def test_an_undecodable_item_is_skipped_once_per_examples_object():
  """The keys that failed to decode are state of the Examples object (one per worker), not of
  the process: a second object tries them again."""
  tried = []

  def make(item, bucket_thw, rng):
    tried.append(item.key)
    if item.key == "bad":
      raise InputError("bad: unreadable")
    return {"bucket_frames": np.int32(bucket_thw[0])}

  stream = grain.MapDataset.source([types.SimpleNamespace(key=k) for k in ("bad", "good")])
  stream = stream.repeat()
  schedule = bucketing.BucketSchedule([(0, np.ones(1))], seed=0)

  def examples():
    return batching.Examples([stream], schedule, ((5, 16, 16),), 1, 0, 0, 1, make)

  first = examples()
  out = first(0)  # step 0 takes stream position 0: "bad", then a redraw
  assert out["skipped"] >= 1 and out["bucket_frames"] == 5 and tried[0] == "bad"
  assert first(2)["skipped"] >= 1  # position 2 is "bad" again: redrawn without decoding
  assert tried.count("bad") == 1 and first.bad_keys == {"bad"}
  examples()(0)
  assert tried.count("bad") == 2


def test_start_up_errors(tmp_path, media):
  os.makedirs(tmp_path / "empty")
  with pytest.raises(InputError, match="holds no videos"):
    batching.make_batches(_cfg(str(tmp_path / "empty")), batch_size=1, seed=0, process_index=0,
                          process_count=1)
  with pytest.raises(InputError, match=r"bucket 33x64x64 .* larger than every clip"):
    batching.make_batches(_cfg(media, buckets=((33, 64, 64),)), batch_size=1, seed=0,
                          process_index=0, process_count=1)
  with pytest.raises(ConfigError, match="4n\\+1"):
    batching.make_batches(_cfg(media, buckets=((4, 32, 32),)), batch_size=1, seed=0,
                          process_index=0, process_count=1)
  with pytest.raises(ConfigError, match="does not split"):
    batching.make_batches(_cfg(media), batch_size=3, seed=0, process_index=0, process_count=2)
  with pytest.raises(InputError, match="not built"):
    sources.TfdsSource("udm10", split="test", data_dir=str(tmp_path / "tfds"))
  with pytest.raises(InputError, match="every clip is smaller than every bucket"):
    precompute.write_latents(media, str(tmp_path / "latents"),
                             config=_cfg("", buckets=((33, 64, 64),)), log=lambda _: None)
  assert not os.path.exists(tmp_path / "latents")


def test_global_batch_on_one_device():
  mesh = jax.make_mesh((1, 1), ("data", "fsdp"))
  host = {"hq": np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4), "bucket": np.int32([1, 1])}
  out = batching.global_batch(host, mesh)
  assert out["hq"].shape == (2, 3, 4) and out["hq"].dtype == np.uint8
  assert out["hq"].sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"), None, None)
  np.testing.assert_array_equal(np.asarray(out["hq"]), host["hq"])
  np.testing.assert_array_equal(np.asarray(out["bucket"]), host["bucket"])


def test_global_batch_on_eight_devices():
  script = textwrap.dedent("""
      import jax, numpy as np
      jax.config.update("jax_num_cpu_devices", 8)
      from seedvr2_jax.data import batching
      mesh = jax.make_mesh((4, 2), ("data", "fsdp"))
      host = {"lq": np.arange(8 * 5, dtype=np.float32).reshape(8, 5)}
      out = batching.global_batch(host, mesh)["lq"]
      assert out.shape == (8, 5) and len(out.addressable_shards) == 8
      for shard in out.addressable_shards:
        np.testing.assert_array_equal(np.asarray(shard.data), host["lq"][shard.index])
        assert shard.data.shape == (1, 5)
      print("ok")
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert result.stdout.strip() == "ok", result.stderr[-2000:]


def test_worker_processes_give_the_in_process_batches(media):
  cfg = _cfg(media)
  local = _take(batching.make_batches(cfg, batch_size=2, seed=5, process_index=0,
                                      process_count=1), 3)
  cfg.workers = 2
  it = batching.make_batches(cfg, batch_size=2, seed=5, process_index=0, process_count=1)
  try:
    for a, b in zip(local, _take(it, 3)):
      _assert_same(a, b)
  finally:
    it.close()


def test_precompute_latents_match_direct_encoding(tmp_path):
  data_dir = str(tmp_path / "tfds")
  tfds_builders.build("seedvr2_samples/small", data_dir=data_dir, manual_dir=MEDIA)
  cfg = _cfg("", buckets=((9, 64, 64), (5, 128, 128)), tfds_data_dir=data_dir)
  spec = "tfds:seedvr2_samples/small:train"
  out = str(tmp_path / "latents")
  # On 3 devices: both clips (one bucket) are encoded in one batch padded to 3.
  script = textwrap.dedent(f"""
      import jax
      jax.config.update("jax_num_cpu_devices", 3)
      from seedvr2_jax.data import batching, precompute
      cfg = batching.default_config()
      cfg.update(dict(buckets={cfg.buckets!r}, degradation="light", tfds_data_dir={data_dir!r}))
      assert len(jax.local_devices()) == 3
      precompute.write_latents({spec!r}, {out!r}, config=cfg, shards=2, seed=7,
                               encode_chunk=None)
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert "wrote 2 clips" in result.stdout, result.stderr[-2000:]
  with open(os.path.join(out, "meta.json")) as f:
    meta = json.load(f)
  assert meta["records"] == 2 and sorted(os.listdir(out)) == [
      "latents-00000-of-00002.array_record", "latents-00001-of-00002.array_record",
      "meta.json", "text.npz"]
  with pytest.raises(InputError, match="exists"):
    precompute.write_latents(spec, out, config=cfg, log=lambda _: None)

  vae, text = precompute.tiny_vae()
  np.testing.assert_array_equal(np.load(os.path.join(out, "text.npz"))["pos"], text["pos"])
  source = sources.TfdsSource("seedvr2_samples/small", data_dir=data_dir)
  buckets = bucketing.check_buckets(cfg.buckets, 4)
  make = batching.PixelExample(1, False, degradations.preset("light"))
  stored = sources.LatentSource(out)
  assert len(stored) == 2
  records = {r["key"]: r for r in (stored[i].read() for i in range(2))}
  encode = nnx.jit(codec.encode)
  for i in range(len(source)):
    example = make(source[i], buckets[1], np.random.default_rng([7, 0, i]))
    hq = condition.to_unit(example["hq"][None])
    lq = condition.lq_pixels_at(condition.to_unit(example["lq"][None]), hq.shape)
    record = records[source[i].key]
    assert record["bucket"] == 1
    np.testing.assert_allclose(record["hq_moments"], encode(vae, hq)[0], atol=1e-4)
    np.testing.assert_allclose(record["lq_moments"], encode(vae, lq)[0], atol=1e-4)

  cfg.latents = out
  it = batching.make_batches(cfg, batch_size=2, seed=0, process_index=0, process_count=1)
  batch = next(it)
  assert it.bucket(0) == (5, 128, 128) and batch["hq_moments"].shape == (2, 2, 16, 16, 32)
  got = sorted(batch["hq_moments"].sum(axis=(1, 2, 3, 4)).tolist())
  want = sorted(r["hq_moments"].sum() for r in records.values())
  np.testing.assert_allclose(got, want, rtol=1e-6)
