"""Throughput of the training degradation (`seedvr2_jax.data.degradations`) on 720p clips.

  python experiments/bench_data.py                       # 21 x 1280x720, preset realesrgan
  python experiments/bench_data.py --clips 16 --workers 1 4 8 16 --preset heavy
  python experiments/bench_data.py --on device --batch 1 2 --workers 1 16 [--profile]

HQ clips: 21 real frames of tests/fixtures/media/bigbuckbunny_1s.mp4 (1280x720). Clip i uses
seed i, so the draws (kernel sizes, resize factors, noise kind, codec, ...) vary as in training.
Single process: seconds per clip and per step (stage 1 blur, resize, noise, JPEG; the second
stage; the final resize + sinc + JPEG; video compression), averaged over --clips clips.
Workers: clips/s of a pool of processes (one thread each: BLAS, FFT and codecs), each worker
degrading --clips clips after one warm-up clip. Prints a markdown table and one JSON line.

`--on device` (`data.degrade_on="device"`): clips/s of the jitted per-pixel stages
(`degrade_jax.degrade_clips`, --batch clips per call, on the first device; median of --clips
calls after a warm-up) and of the host part that stays in the workers (parameter draw + plan,
and the video codec round trip on an LQ-sized clip) in pools of --workers processes.
`--profile`: device time per HLO op of one batch (`utils.benchmark.device_time_by_op`).
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


def _init_worker(frames: int, preset: str, hw: tuple[int, int]) -> None:
  global _clip, _cfg
  from seedvr2_jax.data import degradations
  _clip = np.ascontiguousarray(load_clip(frames)[:, :hw[0], :hw[1]])
  _cfg = degradations.preset(preset)


def _work(seed: int) -> None:
  from seedvr2_jax.data import degradations
  degradations.degrade_clip(_clip, _cfg, seed)


def _work_host_part(seed: int) -> None:
  """What stays on the host with degrade_on="device": the draw, and the codec at LQ size."""
  from seedvr2_jax.data import compression, degrade_jax
  drawn = degrade_jax.draw(_cfg, np.random.default_rng(seed), _clip)
  spec = degrade_jax.video_spec(drawn["video"], _cfg)
  if spec is not None:
    compression.video(np.ascontiguousarray(_clip[:, ::_cfg.scale, ::_cfg.scale]), spec)


def pool_rate(workers: int, clips: int, frames: int, preset: str, hw: tuple[int, int],
              work=_work) -> float:
  """Clips/s of `workers` processes, each doing `work` for `clips` clips after a warm-up."""
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(workers, _init_worker, (frames, preset, hw)) as pool:
    pool.map(work, range(10_000, 10_000 + workers), chunksize=1)  # warm-up, one per worker
    start = time.perf_counter()
    pool.map(work, range(workers * clips), chunksize=1)
    return workers * clips / (time.perf_counter() - start)


def device_rates(clip: np.ndarray, cfg, batches: list[int], calls: int, profile: bool) -> dict:
  """Clips/s of the jitted per-pixel stages for each batch size (and op times if `profile`)."""
  import jax

  from seedvr2_jax.data import degrade_jax
  from seedvr2_jax.utils.benchmark import device_time_by_op, time_jitted
  lq_hw = (clip.shape[1] // cfg.scale, clip.shape[2] // cfg.scale)
  rows = {}
  for b in batches:
    plans = [degrade_jax.draw(cfg, np.random.default_rng(seed), clip)["plan"] for seed in range(b)]
    hq, plans = jax.device_put((np.stack([clip] * b), jax.tree.map(lambda *a: np.stack(a), *plans)))
    fn = lambda hq, plans: degrade_jax.degrade_clips(hq, plans, lq_hw)
    t = time_jitted(fn, hq, plans, iters=calls)
    rows[b] = {"clips_per_s": b / t["seconds"], **t}
    if profile:
      rows[b]["op_ms"] = device_time_by_op(jax.jit(fn), hq, plans)
  return {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "batches": rows}


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
  parser.add_argument("--size", default="720x1280", help="HQ crop HxW of the 1280x720 frames")
  parser.add_argument("--on", choices=("host", "device"), default="host",
                      help="where the per-pixel stages run (data.degrade_on)")
  parser.add_argument("--batch", type=int, nargs="+", default=[1],
                      help="--on device: clips per call")
  parser.add_argument("--profile", action="store_true",
                      help="--on device: device time per HLO op of one call")
  args = parser.parse_args()

  from seedvr2_jax.data import degradations
  height, width = (int(v) for v in args.size.split("x"))
  clip = np.ascontiguousarray(load_clip(args.frames)[:, :height, :width])
  cfg = degradations.preset(args.preset)
  if args.on == "device":
    main_device(args, clip, cfg)
    return
  degrade_timed(clip, cfg, 10_000)  # warm-up
  per_clip = [degrade_timed(clip, cfg, seed) for seed in range(args.clips)]
  totals = [sum(s.values()) for s in per_clip]
  mean = {step: float(np.mean([s.get(step, 0.0) for s in per_clip])) for step in STEPS}
  rates = {w: pool_rate(w, args.clips, args.frames, args.preset, clip.shape[1:3])
           for w in args.workers}

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


def main_device(args, clip: np.ndarray, cfg) -> None:
  device = device_rates(clip, cfg, args.batch, args.clips, args.profile)
  host = {w: pool_rate(w, args.clips, args.frames, args.preset, clip.shape[1:3],
                       _work_host_part) for w in args.workers}
  h, w = clip.shape[1:3]
  print(f"{time.strftime('%Y-%m-%d')}, {device['device']}, jax {device['jax']}; host "
        f"{cpu_model()}, {os.cpu_count()} CPUs; {args.frames} x {w}x{h} HQ -> "
        f"{w // cfg.scale}x{h // cfg.scale} LQ, preset {args.preset}, degrade_on=device\n")
  print("| clips per call | ms per call | clips/s (device stage) | compile s |\n"
        "| --- | --- | --- | --- |")
  for b, row in device["batches"].items():
    print(f"| {b} | {1000 * row['seconds']:.1f} | {row['clips_per_s']:.2f} | "
          f"{row['compile_s']:.1f} |")
  print("\n| processes | host part clips/s (draw + plan + codec) |\n| --- | --- |")
  for workers, rate in host.items():
    print(f"| {workers} | {rate:.2f} |")
  for b, row in device["batches"].items():
    for op, ms in row.get("op_ms", {}).items():
      print(f"  batch {b}: {ms:8.2f} ms  {op}")
  print(json.dumps({"frames": args.frames, "hw": [h, w], "preset": args.preset, "on": "device",
                    **device, "host_part_clips_per_s": host}))


if __name__ == "__main__":
  main()
