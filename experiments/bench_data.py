"""Throughput of the training degradation (`seedvr2_jax.data.degradations`) on 720p clips.

  python experiments/bench_data.py                       # 21 x 1280x720, preset realesrgan
  python experiments/bench_data.py --clips 16 --workers 1 4 8 16 --preset heavy

HQ clips: 21 real frames of tests/fixtures/media/bigbuckbunny_1s.mp4 (1280x720). Clip i uses
seed i, so the draws (kernel sizes, resize factors, noise kind, codec, ...) vary as in training.
Single process: seconds per clip and per step (stage 1 blur, resize, noise, JPEG; the second
stage; the final resize + sinc + JPEG; video compression), averaged over --clips clips.
Workers: clips/s of a pool of processes (one thread each: BLAS, FFT and codecs), each worker
degrading --clips clips after one warm-up clip. Prints a markdown table and one JSON line.
"""

import argparse
import json
import os
import platform
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ.setdefault(_var, "1")  # one core per worker; set before numpy is imported

import multiprocessing  # noqa: E402

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIDEO = os.path.join(ROOT, "tests", "fixtures", "media", "bigbuckbunny_1s.mp4")
STEPS = ("blur", "resize", "noise", "jpeg", "second stage", "final", "video compression")
_clip = _cfg = None  # per worker process


def load_clip(frames: int) -> np.ndarray:
  import itertools

  from seedvr2_jax.data import video_io
  info = video_io.probe(VIDEO)
  return np.stack(list(itertools.islice(video_io.read_frames(info), frames)))


def degrade_timed(clip: np.ndarray, cfg, seed: int) -> dict[str, float]:
  """`degrade_clip` with the time of each step (same code path, same result)."""
  from seedvr2_jax.data import compression, degradations
  rng = np.random.default_rng(seed)
  params = degradations.sample_params(cfg, rng, clip.shape[1:3], frames=clip.shape[0])
  seconds: dict[str, float] = {}
  lq = degradations.degrade_frames(clip, params, rng.spawn(clip.shape[0]), seconds)
  start = time.perf_counter()
  if params.video is not None:
    compression.video(lq, params.video)
  seconds["video compression"] = time.perf_counter() - start
  return seconds


def _init_worker(frames: int, preset: str) -> None:
  global _clip, _cfg
  from seedvr2_jax.data import degradations
  _clip, _cfg = load_clip(frames), degradations.preset(preset)


def _work(seed: int) -> None:
  from seedvr2_jax.data import degradations
  degradations.degrade_clip(_clip, _cfg, seed)


def pool_rate(workers: int, clips: int, frames: int, preset: str) -> float:
  """Clips/s of `workers` processes, each degrading `clips` clips after a warm-up."""
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(workers, _init_worker, (frames, preset)) as pool:
    pool.map(_work, range(10_000, 10_000 + workers), chunksize=1)  # warm-up, one per worker
    start = time.perf_counter()
    pool.map(_work, range(workers * clips), chunksize=1)
    return workers * clips / (time.perf_counter() - start)


def cpu_model() -> str:
  with open("/proc/cpuinfo") as f:
    for line in f:
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  return platform.processor()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--clips", type=int, default=8, help="clips per process")
  parser.add_argument("--frames", type=int, default=21)
  parser.add_argument("--preset", default="realesrgan")
  parser.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count()])
  args = parser.parse_args()

  from seedvr2_jax.data import degradations
  clip, cfg = load_clip(args.frames), degradations.preset(args.preset)
  degrade_timed(clip, cfg, 10_000)  # warm-up
  per_clip = [degrade_timed(clip, cfg, seed) for seed in range(args.clips)]
  totals = [sum(s.values()) for s in per_clip]
  mean = {step: float(np.mean([s.get(step, 0.0) for s in per_clip])) for step in STEPS}
  rates = {w: pool_rate(w, args.clips, args.frames, args.preset) for w in args.workers}

  h, w = clip.shape[1:3]
  print(f"{time.strftime('%Y-%m-%d')}, {cpu_model()}, {os.cpu_count()} CPUs; "
        f"{args.frames} x {w}x{h} HQ -> {w // cfg.scale}x{h // cfg.scale} LQ, preset "
        f"{args.preset}, {args.clips} clips per process\n")
  print("| step | ms per clip | share |\n| --- | --- | --- |")
  for step in STEPS:
    print(f"| {step} | {1000 * mean[step]:.0f} | {100 * mean[step] / np.mean(totals):.0f}% |")
  print(f"| total (single process) | {1000 * np.mean(totals):.0f} "
        f"(min {1000 * min(totals):.0f}, max {1000 * max(totals):.0f}) | 100% |\n")
  print("| processes | clips/s | clips/s per process |\n| --- | --- | --- |")
  for workers, rate in rates.items():
    print(f"| {workers} | {rate:.2f} | {rate / workers:.2f} |")
  print(json.dumps({"frames": args.frames, "hw": [h, w], "preset": args.preset,
                    "clips": args.clips, "seconds_per_clip": float(np.mean(totals)),
                    "step_seconds": mean, "clips_per_s": rates}))


if __name__ == "__main__":
  main()
