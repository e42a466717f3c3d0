"""`seedvr2-jax <command>`: the one console entry point."""

from __future__ import annotations

import argparse
import os
import sys

from seedvr2_jax.errors import ConfigError, SeedVR2Error
from seedvr2_jax.infer import options as restore_options


def _parity(args) -> int:
  from seedvr2_jax import parity
  components = args.components.split(",") if args.components else None
  return 0 if parity.run(args.fixture, components) else 1


def _params(args) -> int:
  import jax
  import numpy as np

  from seedvr2_jax import config_lib
  from seedvr2_jax.convert import dit as dit_convert
  from seedvr2_jax.models.dit import config as dit_config
  cfg = dit_config.from_config_dict(config_lib.load_config(args.config).model)
  _, abstract = dit_convert.abstract_model(cfg)  # jax.eval_shape: nothing is allocated
  total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
  rope = len(dit_convert.rope_buffer_keys(cfg)) * (0 if cfg.rope_type is None
                                                    else len(cfg.rope_freqs))
  print(f"total_params={total}")
  print(f"rope_buffer_elements={rope} (official state_dict entries: {total + rope})")
  return 0


def _size(text: str) -> tuple[int, int]:
  """'HxW' -> (H, W)."""
  try:
    h, w = (int(v) for v in text.lower().split("x"))
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected HxW (e.g. 720x1280), got {text!r}") from None
  if h <= 0 or w <= 0:
    raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
  return h, w


def _bucket(text: str) -> tuple[int, int, int]:
  """'FxHxW' -> (frames, height, width)."""
  try:
    t, h, w = (int(v) for v in text.lower().split("x"))
  except ValueError:
    raise ConfigError(f"--buckets: expected FxHxW (e.g. 21x720x1280), got {text!r}") from None
  return t, h, w


def _restore(args) -> int:
  import os

  import jax

  from seedvr2_jax.infer import batch
  if args.cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.environ.get(
        "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.expanduser(args.cache_dir), "xla")))
  options = restore_options.RestoreOptions(
      checkpoint=args.checkpoint, resolution=args.resolution, short_side=args.short_side,
      scale=args.scale, colorfix=args.colorfix, seed=args.seed, dtype=args.dtype,
      dit_weights=args.dit_weights,
      clip_frames=args.clip_frames, clip_overlap=args.clip_overlap, max_frames=args.max_frames,
      encode_chunk=args.encode_chunk, decode_chunk=args.decode_chunk, tile=args.tile,
      tile_overlap=args.tile_overlap, sequence_parallel=args.sequence_parallel, crf=args.crf,
      overwrite=args.overwrite, dry_run=args.dry_run, size_mode=args.size_mode,
      scene_cuts=args.scene_cuts, codec=args.codec, pix_fmt=args.pix_fmt,
      png_bits=args.png_bits, audio=not args.no_audio, cache_dir=args.cache_dir,
      resume=args.resume, offload=args.offload, memory_budget=args.memory_budget)
  many = args.output_dir is not None
  if many:
    jobs = batch.jobs_for(args.inputs, args.output_dir, args.output_ext)
  elif len(args.inputs) == 2:
    jobs = [tuple(args.inputs)]
  else:
    raise ConfigError("restore takes INPUT OUTPUT, or several inputs with -o OUTPUT_DIR")
  _join_job(args)
  batch.restore_jobs(jobs, options, many=many,
                     process=(jax.process_index(), jax.process_count()))
  return 0


def _convert(args) -> int:
  from seedvr2_jax import config_lib
  from seedvr2_jax.convert import bundle
  from seedvr2_jax.models.dit import config as dit_config
  from seedvr2_jax.models.vae import config as vae_config
  dit_cfg = vae_cfg = None
  if args.dit_config:
    dit_cfg = dit_config.from_config_dict(config_lib.load_config(args.dit_config).model)
  if args.vae_config:
    vae_cfg = vae_config.from_config_dict(config_lib.load_config(args.vae_config).vae)
  bundle.convert(args.dit, args.vae, args.pos_emb, args.neg_emb, args.out,
                 dtype={"bf16": "bfloat16", "fp32": "float32"}[args.dtype], variant=args.variant,
                 dit_cfg=dit_cfg, vae_cfg=vae_cfg, overwrite=args.overwrite)
  return 0


def _export(args) -> int:
  from seedvr2_jax.convert import bundle
  bundle.export(args.checkpoint, args.out, overwrite=args.overwrite)
  return 0


def _degrade(args) -> int:
  from seedvr2_jax.data import degrade_file
  degrade_file.degrade_with_preset(args.input, args.output, args.config, scale=args.scale,
                                   seed=args.seed, overwrite=args.overwrite)
  return 0


def _evaluate(args) -> int:
  from seedvr2_jax.metrics import evaluate, suite
  evaluate.run_cli(args.restored, args.reference, crop_border=args.crop_border,
                   max_frames=args.max_frames, json_path=args.json,
                   metrics=suite.parse(args.metrics), iqa_weights=args.iqa_weights,
                   overwrite=args.overwrite)
  return 0


def _join_job(args) -> None:
  """Multi-process commands join their job before anything touches a JAX backend."""
  if args.distributed:
    from seedvr2_jax.parallel import distributed
    distributed.initialize(args.coordinator_address, args.num_processes, args.process_id,
                           timeout_s=args.distributed_timeout)


def _tables(args) -> int:
  _join_job(args)
  from seedvr2_jax.metrics import suite
  from seedvr2_jax.tables import run
  run.run(args.datasets.split(","), args.data_dir, args.out, checkpoints=args.checkpoint,
          max_clips=args.max_clips, max_frames=args.max_frames, clip_frames=args.clip_frames,
          metrics=suite.parse(args.metrics) if args.metrics else None,
          iqa_weights=args.iqa_weights)
  return 0


def _build_dataset(args) -> int:
  from seedvr2_jax.data import tfds_builders
  builder = tfds_builders.build(args.name, data_dir=args.data_dir, manual_dir=args.manual_dir,
                                overwrite=args.overwrite)
  splits = ", ".join(f"{k} {v.num_examples}" for k, v in builder.info.splits.items())
  print(f"built {builder.info.full_name} in {args.data_dir}: {splits}")
  return 0


def _precompute(args) -> int:
  from seedvr2_jax import config_lib
  from seedvr2_jax.data import batching, precompute
  cfg = (config_lib.load_config(args.config).data if args.config
         else batching.default_config())
  if args.buckets:
    cfg.buckets = tuple(_bucket(b) for b in args.buckets.split(","))
  precompute.write_latents(args.data, args.out, checkpoint=args.checkpoint,
                           shards=args.shards, config=cfg, seed=args.seed, dtype=args.dtype,
                           encode_chunk=args.encode_chunk, overwrite=args.overwrite)
  return 0


def _train(args) -> int:
  from seedvr2_jax.utils import xla_flags
  xla_flags.apply_gpu_flags()  # before _join_job or anything else starts a backend
  _join_job(args)
  from seedvr2_jax import config_lib
  from seedvr2_jax.train import data, loop
  config = config_lib.load_with_overrides(args.config, args.overrides)
  loop.train(config, args.workdir, data.from_config)
  return 0


def _export_run(args) -> int:
  from seedvr2_jax import config_lib
  from seedvr2_jax.train import export
  config = config_lib.load_with_overrides(args.config, args.overrides)
  export.export_run(config, args.workdir, args.out, step=args.step, ema=not args.raw,
                    overwrite=args.overwrite)
  return 0


def _add_distributed(p: argparse.ArgumentParser, what: str) -> None:
  g = p.add_argument_group("multi-process runs")
  g.add_argument("--distributed", action="store_true",
                 help=f"{what}: the launcher (SLURM, Open MPI, Cloud TPU, Kubernetes) is "
                 "detected from the environment, or given by the next three flags")
  g.add_argument("--coordinator-address", help="HOST:PORT of process 0's coordination service")
  g.add_argument("--num-processes", type=int, help="processes in the job")
  g.add_argument("--process-id", type=int, help="this process's index, 0 .. N-1")
  g.add_argument("--distributed-timeout", type=int, default=300,
                 help="seconds to wait for every process to join (default 300)")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="seedvr2-jax", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("parity", help="compare the port with official outputs in a fixture dir")
  p.add_argument("fixture", help="fixture directory (e.g. tests/fixtures/parity_a)")
  p.add_argument("--components", help="comma-separated subset, e.g. dit3b,dit7b (default: all)")
  p.set_defaults(run=_parity)
  p = sub.add_parser("params", help="count a config's parameters without allocating them")
  p.add_argument("config", help="config file, e.g. configs/seedvr2_3b.py[:tiny]")
  p.set_defaults(run=_params)

  p = sub.add_parser("convert", help="official SeedVR2 files -> one JAX checkpoint directory")
  p.add_argument("--dit", required=True, help="seedvr2_ema_{3b,7b}[_sharp].pth or .safetensors")
  p.add_argument("--vae", required=True, help="ema_vae.pth or .safetensors")
  p.add_argument("--pos-emb", required=True, help="pos_emb.pt (or .safetensors)")
  p.add_argument("--neg-emb", required=True, help="neg_emb.pt (or .safetensors)")
  p.add_argument("--out", required=True, help="checkpoint directory to create")
  p.add_argument("--dtype", choices=["bf16", "fp32"], default="fp32")
  p.add_argument("--variant", choices=["3b", "7b"], help="default: detected from the keys")
  p.add_argument("--dit-config", help="config file for a non-official DiT size")
  p.add_argument("--vae-config", help="config file for a non-official VAE size")
  p.add_argument("--overwrite", action="store_true")
  p.set_defaults(run=_convert)

  p = sub.add_parser("export", help="a JAX checkpoint -> official-key safetensors files")
  p.add_argument("checkpoint", help="directory made by `convert` (or by training)")
  p.add_argument("--out", required=True, help="directory to write the .safetensors files into")
  p.add_argument("--overwrite", action="store_true")
  p.set_defaults(run=_export)

  default = restore_options.RestoreOptions()  # the size flags stay None: the options decide
  p = sub.add_parser("restore", help="restore a video, image or frame folder in one step")
  p.add_argument("inputs", nargs="+", metavar="INPUT",
                 help="INPUT OUTPUT: a video file, image or folder of PNG/JPG frames, and "
                      ".mp4/.mkv/.mov/.webm, an image file or a folder for PNG frames; with -o: "
                      "inputs, folders of videos and .txt lists of paths")
  p.add_argument("-o", "--output-dir",
                 help="restore every input to DIR/NAME.EXT with one model load (existing "
                      "outputs are skipped without --overwrite)")
  p.add_argument("--output-ext", default="mp4",
                 help="with -o: mp4/mkv/mov, png for one-frame inputs, or 'frames' for PNG "
                      "folders (default mp4)")
  p.add_argument("--checkpoint", default=default.checkpoint,
                 help="directory made by `seedvr2-jax convert` or `export-run` (default: the "
                      "bundled toy model)")
  size = p.add_mutually_exclusive_group()
  size.add_argument("--resolution", type=_size,
                    help="HxW: output area H*W, input aspect kept (official; default %s)"
                         % "x".join(map(str, restore_options.DEFAULT_RESOLUTION)))
  size.add_argument("--short-side", type=int, help="output short side in pixels")
  size.add_argument("--scale", type=float, help="output size = input size x S")
  p.add_argument("--colorfix", choices=restore_options.COLORFIX_MODES, default=default.colorfix)
  p.add_argument("--seed", type=int, default=default.seed)
  p.add_argument("--dtype", choices=restore_options.DTYPES, default=default.dtype,
                 help="auto: bfloat16 on GPU, float32 elsewhere")
  p.add_argument("--dit-weights", choices=restore_options.DIT_WEIGHTS,
                 default=default.dit_weights,
                 help="DiT block kernels as loaded, or weight-only int8 / fp8 (e4m3) with "
                      "per-channel scales (smaller, slightly less accurate)")
  p.add_argument("--clip-frames", type=int, default=default.clip_frames,
                 help="frames per clip for long videos (default: the whole video, as official)")
  p.add_argument("--clip-overlap", type=int, default=default.clip_overlap,
                 help="frames cross-faded between clips")
  p.add_argument("--max-frames", type=int, default=default.max_frames,
                 help="restore only the first N frames")
  p.add_argument("--encode-chunk", type=int, default=default.encode_chunk,
                 help="VAE encode chunk (frames, 4k)")
  p.add_argument("--decode-chunk", type=int, default=default.decode_chunk,
                 help="VAE decode chunk (latent frames)")
  p.add_argument("--tile", type=_size, default=default.tile,
                 help="HxW VAE spatial tile in pixels (very large frames)")
  p.add_argument("--tile-overlap", type=int, default=default.tile_overlap,
                 help="tile overlap in pixels")
  p.add_argument("--sequence-parallel", type=int, default=default.sequence_parallel,
                 help="devices that share one clip (the rest run clips in parallel)")
  p.add_argument("--crf", type=int, default=default.crf, help="H.264 quality (lower is better)")
  p.add_argument("--overwrite", action="store_true", help="replace an existing output")
  p.add_argument("--dry-run", action="store_true", help="print the plan, restore nothing")
  p.add_argument("--cache-dir", default=default.cache_dir,
                 help="compiled programs, loaded untraced by later runs, and XLA's cache "
                 "(default $SEEDVR2_JAX_CACHE or ~/.cache/seedvr2-jax; '' for none)")
  p.add_argument("--size-mode", choices=restore_options.SIZE_MODES, default=default.size_mode,
                 help="pad: exactly the requested size (reflect-pad to /16, crop back); crop: "
                      "the official centre crop to /16")
  p.add_argument("--scene-cuts", choices=restore_options.SCENE_CUTS,
                 default=default.scene_cuts, help="auto: a new clip at each detected cut")
  p.add_argument("--codec", default=default.codec,
                 help="video codec: h264|hevc|prores|ffv1|vp9 (default: h264, vp9 for .webm)")
  p.add_argument("--pix-fmt", default=default.pix_fmt,
                 help="video pixel format, e.g. yuv420p, yuv444p, yuv420p10le (10-bit)")
  p.add_argument("--png-bits", type=int, choices=(8, 16), default=default.png_bits,
                 help="bits per sample of PNG outputs")
  p.add_argument("--no-audio", action="store_true",
                 help="drop the input's audio (by default copied, or transcoded to AAC/Opus "
                      "where the container cannot hold it)")
  p.add_argument("--resume", action="store_true",
                 help="continue an interrupted restore from the frames saved in OUTPUT.parts/")
  p.add_argument("--offload", choices=restore_options.OFFLOAD_MODES, default=default.offload,
                 help="stages: keep the weights of the stages not running (encode, DiT, "
                      "decode) in host memory; blocks: also stream the DiT's blocks from host "
                      "memory one at a time")
  p.add_argument("--memory-budget", type=float, default=default.memory_budget, metavar="GB",
                 help="device memory to fit in: clip length, VAE tiles and offload are chosen "
                      "from XLA's estimate of each stage (default: the GPU's free memory; none "
                      "on CPU); --dry-run prints the plan")
  _add_distributed(p, "one process per host; inputs dealt out")
  p.set_defaults(run=_restore)

  p = sub.add_parser("degrade", help="synthesise a training LQ version of a video or image")
  p.add_argument("input", help="video file or image")
  p.add_argument("output", help=".mp4/.mkv/.mov for a video input, an image file for an image")
  p.add_argument("--config", default="realesrgan",
                 help="degradation preset: realesrgan (default), light or heavy")
  p.add_argument("--scale", type=int, help="downscaling factor (default: the preset's)")
  p.add_argument("--seed", type=int, default=0, help="same seed, same output")
  p.add_argument("--overwrite", action="store_true", help="replace an existing output")
  p.set_defaults(run=_degrade)

  p = sub.add_parser("evaluate", help="quality metrics of restored frames (mean over frames), "
                                      "against the reference for full-reference ones")
  p.add_argument("restored", help="video file, image, or folder of PNG/JPG/BMP frames")
  p.add_argument("reference", nargs="?",
                 help="the ground truth: same frame size and frame count (full-reference metrics)")
  p.add_argument("--metrics", default="psnr,ssim,lpips,dists,niqe",
                 help="comma-separated: psnr, ssim, lpips, dists, ssim_bt601 (full-reference), "
                      "niqe, musiq, clipiqa, dover (no-reference)")
  p.add_argument("--iqa-weights",
                 help="folder of the MUSIQ / CLIP-IQA / DOVER weight files (docs/tables.md)")
  p.add_argument("--crop-border", type=int, default=0, help="pixels dropped on each side first")
  p.add_argument("--max-frames", type=int, help="compare only the first N frames")
  p.add_argument("--json", help="also write the means and per-frame values to this JSON file")
  p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
  p.set_defaults(run=_evaluate)

  p = sub.add_parser("tables", help="restore and score the test sets with each model and bicubic:"
                                    " OUT/results.json, OUT/tables.md (SeedVR2 Tables 1 and 4)")
  p.add_argument("--checkpoint", action="append",
                 help="LABEL=DIR, repeatable (none: the bundled toy model); label official "
                      "checkpoints SeedVR2-3B / SeedVR2-7B to see the paper's numbers beside them")
  p.add_argument("--datasets", default="seedvr2_samples",
                 help="comma-separated tfds builders: spmcs, udm10, reds30, youhq40, videolq, "
                      "seedvr2_samples[/small]")
  p.add_argument("--data-dir", required=True, help="where build-dataset wrote the datasets")
  p.add_argument("--out", required=True, help="results folder; the same command resumes it")
  p.add_argument("--max-clips", type=int, help="only the first N clips of each dataset")
  p.add_argument("--max-frames", type=int, help="only the first N frames of each clip")
  p.add_argument("--clip-frames", type=int, help="restore in clips of N frames (default: whole)")
  p.add_argument("--metrics", help="comma-separated subset (default: all available)")
  p.add_argument("--iqa-weights",
                 help="folder of the MUSIQ / CLIP-IQA / DOVER weight files (docs/tables.md)")
  _add_distributed(p, "one process per host; clips dealt out")
  p.set_defaults(run=_tables)

  p = sub.add_parser("build-dataset", help="build a tfds dataset (array_record) from a folder")
  p.add_argument("name", help="spmcs, udm10, reds30, youhq40[/given], videolq, seedvr2_samples"
                              "[/small]")
  p.add_argument("--data-dir", required=True, help="tfds data_dir to write into")
  p.add_argument("--manual-dir", help="the dataset's local folder (not needed for the samples)")
  p.add_argument("--overwrite", action="store_true", help="rebuild an existing dataset")
  p.set_defaults(run=_build_dataset)

  p = sub.add_parser("precompute-latents",
                     help="VAE posteriors of a dataset's HQ/LQ clips for training on latents")
  p.add_argument("data", help="sources: DIR or tfds:NAME[:SPLIT], optionally *WEIGHT, "
                              "comma-separated")
  p.add_argument("out", help="directory to create (read it with --config.data.latents=OUT)")
  p.add_argument("--checkpoint", help="directory made by `seedvr2-jax convert` (its VAE and "
                                      "text embeddings; default: a tiny random VAE)")
  p.add_argument("--config", help="training config whose `data` fields (buckets, degradation, "
                                  "scale, ...) to use; default: the pipeline's defaults")
  p.add_argument("--buckets", help="FxHxW[,FxHxW...] (frames x height x width) instead of the "
                                   "config's")
  p.add_argument("--shards", type=int, default=1, help="array_record files to spread over")
  p.add_argument("--seed", type=int, default=0, help="crops and degradations")
  p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                 help="stored moments")
  p.add_argument("--encode-chunk", type=int, default=4, help="VAE encode chunk (frames, 4k)")
  p.add_argument("--overwrite", action="store_true", help="replace an existing output")
  p.set_defaults(run=_precompute)

  p = sub.add_parser("train", help="train or distill (resumes from WORKDIR's checkpoints)",
                     epilog="Override config fields with --config.FIELD=VALUE, e.g. "
                            "--config.total_steps=100 --config.optim.lr=1e-5")
  p.add_argument("--config", required=True, help="config file, e.g. configs/tiny.py[:distill]")
  p.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, TensorBoard")
  _add_distributed(p, "one process per host (or per GPU), sharing the mesh")
  p.set_defaults(run=_train, overrides=[])

  p = sub.add_parser("export-run", help="a training run's checkpoint -> a checkpoint directory "
                     "for `restore` and `train --config.init.checkpoint`",
                     epilog="Pass the config and --config.FIELD=VALUE overrides of the run.")
  p.add_argument("--config", required=True, help="the run's config file")
  p.add_argument("--workdir", required=True, help="the run's workdir")
  p.add_argument("--out", required=True, help="output checkpoint directory")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
  p.add_argument("--raw", action="store_true", help="raw parameters instead of the EMA")
  p.add_argument("--overwrite", action="store_true", help="replace an existing output")
  p.set_defaults(run=_export_run, overrides=[])
  return parser


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args, extra = parser.parse_known_args(argv)
  if extra and args.command not in ("train", "export-run"):
    parser.error(f"unrecognized arguments: {' '.join(extra)}")
  args.overrides = extra
  try:
    return args.run(args)
  except SeedVR2Error as e:
    print(f"seedvr2-jax {args.command}: error: {e}", file=sys.stderr)
    return 2


def run() -> None:
  """The console entry point: `main`, and a successful single-process `restore` then ends the
  process without the JAX runtime's teardown (freeing every compiled program and buffer: 1.1 s
  after a restore's output on the 2-core CPU), which nothing of a finished restore needs."""
  rc = main()
  if rc == 0 and sys.argv[1:2] == ["restore"]:
    import jax
    if jax.process_count() == 1:  # several processes shut their coordination service down
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(0)
  sys.exit(rc)


if __name__ == "__main__":
  run()
