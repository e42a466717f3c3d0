"""End-to-end one-step restoration benchmark (3B, bf16, random weights): the split between
VAE encode, DiT, VAE decode, colour fix and video I/O, the `seedvr2-jax restore` wall time on a
real video, and peak GPU memory.

  python experiments/bench_restore.py                        # the three default settings
  python experiments/bench_restore.py --runs 100:192x336:768x1344 [--offload stages]

A run is FRAMES:LQ_HxW:OUT_HxW (output area as the official --resolution). Stages: each is
jitted with the weights as arguments and timed on device-resident inputs (median of --iters
after a warm-up); I/O is PyAV decoding of the LQ clip plus H.264 encoding of the output, on the
host. The restore command: the random models saved as a checkpoint (`convert.bundle.save`),
then `seedvr2-jax restore --checkpoint` in its own process, as a user runs it (imports, weight
loading, programs, read, model, write; one clip, as the official code) on an H.264 file of the
LQ clip made from the real sample video tests/fixtures/media/bikes_2s.mp4 (played forwards and
backwards to reach FRAMES), once cold (empty --cache-dir: tracing and compilation included) and
once warm (its compiled programs loaded from --cache-dir), then with three copies of the clip
as inputs (`-o DIR`: one model load; a further input's time is from the second input's start to
the third's: its read, model and write with the models and programs loaded, the end of its write
overlapping the next input as in a folder of videos). Each output line of the command is
kept with the seconds since the command started (the timeline: `--timeline` prints it). The
weights' load (`bundle.load`) is also timed alone. Each run is its own process.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lq_video(path: str, frames: int, lq_h: int, lq_w: int) -> None:
  """An H.264 file of `frames` real frames at lq_h x lq_w (bikes, ping-pong looped)."""
  import itertools

  import av

  from seedvr2_jax.data import video_io
  info = video_io.probe(os.path.join(ROOT, "tests", "fixtures", "media", "bikes_2s.mp4"))
  source = [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(
      width=lq_w, height=lq_h, interpolation="AREA").to_ndarray(format="rgb24")
      for f in video_io.read_frames(info)]
  loop = itertools.cycle(source + source[-2:0:-1])
  with video_io.VideoWriter(path, info.fps) as writer:
    for frame in itertools.islice(loop, frames):
      writer.write(frame)


def restore_command(args: list[str]) -> tuple[float, list[tuple[float, str]]]:
  """Runs `seedvr2-jax restore ARGS` in a new process; (wall seconds, [(seconds since start,
  output line)]), progress updates included (each carriage return ends a line)."""
  start = time.perf_counter()
  proc = subprocess.Popen([sys.executable, "-m", "seedvr2_jax.cli", "restore", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))
  timeline = [(time.perf_counter() - start, line.rstrip("\n"))
              for line in proc.stdout if line.strip()]
  if proc.wait():
    raise RuntimeError("restore failed:\n" + "\n".join(line for _, line in timeline[-20:]))
  return time.perf_counter() - start, timeline


def further_input_seconds(timeline: list[tuple[float, str]]) -> float:
  """Seconds from the start of a three-input command's second input ("[2/3] ...") to the start
  of its third ("[3/3] ...")."""
  start = next(t for t, line in timeline if line.startswith("[2/3]"))
  return next(t for t, line in timeline if line.startswith("[3/3]")) - start


def load_seconds(checkpoint: str, iters: int) -> float:
  """Seconds `bundle.load` takes to read a checkpoint's DiT and VAE onto the default device
  alone (no program loading beside it), median of `iters` after one read that fills the page
  cache."""
  import statistics

  import jax

  from seedvr2_jax.convert import bundle as bundle_lib
  header = bundle_lib.load_header(checkpoint)
  times = []
  for _ in range(iters + 1):
    start = time.perf_counter()
    loaded = bundle_lib.load(checkpoint, header=header)
    jax.block_until_ready(jax.tree.leaves((loaded.dit_state, loaded.vae_state)))
    times.append(time.perf_counter() - start)
    del loaded
  return statistics.median(times[1:])


def run_one(spec: str, iters: int, tiny: bool, workdir: str) -> dict:
  """The stage timings; leaves the LQ video and the models' checkpoint in `workdir`."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from seedvr2_jax.convert import bundle as bundle_lib
  from seedvr2_jax.data import video_io
  from seedvr2_jax.infer import colorfix, one_step, preprocess
  from seedvr2_jax.infer.options import RestoreOptions
  from seedvr2_jax.models.dit import config as dit_config
  from seedvr2_jax.models.dit.nadit import NaDiT
  from seedvr2_jax.models.vae import config as vae_config
  from seedvr2_jax.models.vae.autoencoder import VideoAutoencoder
  from seedvr2_jax.utils.benchmark import peak_memory_gb, time_jitted

  frames, lq, out = spec.split(":")
  frames = int(frames)
  lq_h, lq_w = (int(v) for v in lq.split("x"))
  out_h, out_w = (int(v) for v in out.split("x"))
  dtype = "bfloat16"
  dit = NaDiT(dit_config.official("3b", param_dtype=dtype, dtype=dtype,
                                  **(dit_config.TINY["3b"] if tiny else {})), nnx.Rngs(0))
  vae = VideoAutoencoder(vae_config.VAEConfig(param_dtype=dtype, dtype=dtype,
                                              **(vae_config.TINY if tiny else {})), nnx.Rngs(1))
  dit_graph, dit_state = nnx.split(dit)
  vae_graph, vae_state = nnx.split(vae)
  txt = jax.random.normal(jax.random.key(2), (58, dit.cfg.txt_in_dim), jnp.bfloat16)
  opts = RestoreOptions()
  size = preprocess.output_size(lq_h, lq_w, resolution=(out_h, out_w))
  raw = np.random.default_rng(0).integers(0, 256, (frames, lq_h, lq_w, 3), np.uint8)
  rows = {}

  def stage(name, fn, *args):
    """Times fn(*args); weights are arguments (closed-over arrays would be baked in as HLO
    constants, which multiplies compile time)."""
    rows[name] = time_jitted(fn, *args, warmup=1, iters=iters)
    return jax.jit(fn)(*args)

  with_vae = lambda fn: lambda state, *a: fn(nnx.merge(vae_graph, state), *a)
  pre = stage("preprocess", lambda x: preprocess.preprocess(x / 255.0, size), jnp.asarray(raw))
  padded = preprocess.pad_frames(pre)[None]
  latent_shape = one_step.latent_shape(vae, pre[None].shape)
  eps = jax.random.normal(jax.random.key(3), latent_shape)
  noise = jax.random.normal(jax.random.key(4), latent_shape)
  lq_latent = stage("encode", with_vae(lambda v, x, e: one_step.encode_lq(v, x, e, opts)),
                    vae_state, padded, eps)
  x0 = stage("dit", lambda s, n, c, t: one_step.predict_x0(nnx.merge(dit_graph, s), n, c, t),
             dit_state, noise, lq_latent, txt[None])
  decoded = stage("decode", with_vae(lambda v, x: one_step.decode_x0(v, x, opts)),
                  vae_state, x0)[0, :frames]
  stage("colorfix", lambda d, p: one_step.to_uint8(colorfix.color_fix(d, p, "wavelet")),
        decoded, pre)
  output = np.asarray(one_step.to_uint8(decoded))
  del lq_latent, x0, decoded, eps, noise, padded

  src = os.path.join(workdir, "noise.mp4")
  with video_io.VideoWriter(src, 25) as writer:
    for frame in raw:
      writer.write(frame)
  start = time.perf_counter()
  decoded_frames = sum(1 for _ in video_io.read_frames(video_io.probe(src)))
  read_s = time.perf_counter() - start
  start = time.perf_counter()
  with video_io.VideoWriter(os.path.join(workdir, "noise_out.mp4"), 25) as writer:
    for frame in output:
      writer.write(frame)
  write_s = time.perf_counter() - start
  assert decoded_frames == frames

  lq_video(os.path.join(workdir, "lq.mp4"), frames, lq_h, lq_w)
  start = time.perf_counter()
  neg = jax.random.normal(jax.random.key(5), (64, dit.cfg.txt_in_dim), jnp.bfloat16)
  bundle_lib.save(bundle_lib.Bundle(dit.cfg, vae.cfg, dit_state, vae_state, txt, neg),
                  os.path.join(workdir, "checkpoint"))
  save_s = time.perf_counter() - start
  peak_gb = peak_memory_gb()
  del dit, vae, dit_state, vae_state  # the loads below read copies of them
  load_s = load_seconds(os.path.join(workdir, "checkpoint"), iters)
  model_s = sum(rows[k]["seconds"] for k in ("preprocess", "encode", "dit", "decode", "colorfix"))
  return dict(spec=spec, frames=frames,
              output=f"{output.shape[2]}x{output.shape[1]}",
              device=jax.devices()[0].device_kind, jax=jax.__version__,
              stages={k: v["seconds"] for k, v in rows.items()},
              compile_s={k: v["compile_s"] for k, v in rows.items()}, model_s=model_s,
              read_s=read_s, write_s=write_s, total_s=model_s + read_s + write_s,
              checkpoint_save_s=save_s, load_s=load_s, peak_gb=peak_gb)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", nargs="+", default=["100:192x336:768x1344",
                                                    "101:180x320:720x1280",
                                                    "45:270x480:1080x1920"])
  parser.add_argument("--iters", type=int, default=3)
  parser.add_argument("--tiny", action="store_true", help="tiny model (a CPU smoke test)")
  parser.add_argument("--out", default=None, help="append JSON lines here")
  parser.add_argument("--offload", default="none",
                      help="the restore command's --offload (none|stages|blocks)")
  parser.add_argument("--timeline", action="store_true",
                      help="print each restore command's output lines with their times")
  parser.add_argument("--child", metavar="WORKDIR", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(run_one(args.runs[0], args.iters, args.tiny, args.child)))
    return
  for spec in args.runs:
    with tempfile.TemporaryDirectory() as workdir:
      proc = subprocess.run([sys.executable, __file__, "--child", workdir, "--runs", spec,
                             "--iters", str(args.iters)] + ["--tiny"] * args.tiny,
                            capture_output=True, text=True)
      if proc.returncode:
        print(f"{spec}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
        continue
      r = json.loads(proc.stdout.strip().splitlines()[-1])
      out_h, out_w = spec.split(":")[2].split("x")
      command = [os.path.join(workdir, "lq.mp4"), os.path.join(workdir, "restored.mp4"),
                 "--checkpoint", os.path.join(workdir, "checkpoint"), "--resolution",
                 f"{out_h}x{out_w}", "--offload", args.offload, "--overwrite",
                 "--cache-dir", os.path.join(workdir, "cache")]
      for run in ("cold", "warm"):  # the first fills --cache-dir, the second loads from it
        r[f"restore_{run}_s"], r[f"timeline_{run}"] = restore_command(command)
      # Three inputs, one load: what a further file of a folder costs with the models loaded.
      copies = [os.path.join(workdir, f"lq{i}.mp4") for i in (2, 3)]
      for copy in copies:
        shutil.copy(command[0], copy)
      r["restore_three_s"], r["timeline_three"] = restore_command(
          [command[0], *copies, "-o", os.path.join(workdir, "three"), *command[2:]])
      r["further_input_s"] = further_input_seconds(r["timeline_three"])
      if args.timeline:
        for run in ("cold", "warm", "three"):
          print(f"{spec} restore command, {run}:")
          for seconds, line in r[f"timeline_{run}"]:
            print(f"  {seconds:7.2f} s  {line}")
    r["offload"] = args.offload
    if args.out:
      with open(args.out, "a") as f:
        f.write(json.dumps(r) + "\n")
    s = r["stages"]
    print(f"{r['frames']} frames -> {r['output']}: total {r['total_s']:.2f} s = encode "
          f"{s['encode']:.2f} + DiT {s['dit']:.2f} + decode {s['decode']:.2f} + colour fix "
          f"{s['colorfix']:.3f} + resize {s['preprocess']:.3f} + read {r['read_s']:.2f} + write "
          f"{r['write_s']:.2f}; restore command {r['restore_warm_s']:.2f} s (cold "
          f"{r['restore_cold_s']:.1f} s; a further input with the models loaded "
          f"{r['further_input_s']:.2f} s); weights load alone {r['load_s']:.2f} s; peak "
          f"{r['peak_gb']:.1f} GB  {r['device']}", flush=True)


if __name__ == "__main__":
  sys.path.insert(0, ROOT)
  main()
