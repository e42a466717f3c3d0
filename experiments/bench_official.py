"""Side-by-side benchmark: the official PyTorch SeedVR2-3B code against ours, same weights.

  bash experiments/official/fetch.sh               # once: the official code, pinned commit
  python experiments/bench_official.py             # Table 6 setting: 100 frames at 768x1344
  python experiments/bench_official.py --runs 45:720x1280 --iters 5
  python experiments/bench_official.py --tiny --runs 9:64x96 --dtype float32   # CPU smoke test

A run is FRAMES:HxW, the output size (the clip each side encodes, padded to 4n+1 frames as the
official `cut_videos` does). The official DiT (`models/dit_v2` NaDiT) and VAE are built from the
official config (`configs_3b/main.yaml`; `--tiny`: the project's tiny DiT and VAE sizes as
overrides) with random weights (module init, then N(0, 0.02) added so that no zero-initialised
layer hides a difference); their state_dict goes through our converter, so both sides hold the
same weights. Precision as the official script runs: DiT parameters float32 under bfloat16
autocast, VAE in bfloat16; ours in bfloat16 (`--dtype float32`: both in float32, for a tight
agreement check). Stages, timed on device-resident inputs with synchronisation (median of
--iters after --warmup): VAE encode (posterior sample, scaled), DiT (one step at t = 1000), VAE
decode. The official stages are the runner's own helpers (`VideoDiffusionInfer.vae_encode`,
`.vae_decode`) and the NaDiT forward with the inputs its `inference` builds. Each side's
stage output is compared with max |ours - official| / max |official|; ours runs on the
official encode latent and DiT output, so differences do not compound (encode compares the
posterior means).

Missing pieces of the official runtime are substituted at run time, and the script says so:
flash_attn's `flash_attn_varlen_func` by torch SDPA over each cu_seqlens segment, apex's
FusedRMSNorm / FusedLayerNorm by torch norms with float32 statistics. diffusers, omegaconf and
rotary_embedding_torch are used in the forward pass or the config and must be installed.
"""

import argparse
import contextlib
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL_DIR = os.path.join(ROOT, "experiments", "official", "SeedVR")
STAGES = ("encode", "dit", "decode")
TXT_LEN = 58  # tokens of the official positive prompt embedding (pos_emb.pt)


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
                     dropout_p=0.0, softmax_scale=None, causal=False, **unused):
  """flash_attn_varlen_func through torch SDPA: q (total_q, heads, dim), k / v (total_k, ...),
  attention within each [cu_seqlens[i], cu_seqlens[i + 1]) segment."""
  import torch.nn.functional as F
  out = q.new_empty(q.shape[:-1] + v.shape[-1:])
  bounds_q, bounds_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
  for q0, q1, k0, k1 in zip(bounds_q, bounds_q[1:], bounds_k, bounds_k[1:]):
    out[q0:q1] = F.scaled_dot_product_attention(
        q[q0:q1].transpose(0, 1), k[k0:k1].transpose(0, 1), v[k0:k1].transpose(0, 1),
        dropout_p=dropout_p, is_causal=causal, scale=softmax_scale).transpose(0, 1)
  return out


def apex_norms(torch):
  """A stand-in `apex.normalization`: statistics and affine in float32, output in the input
  dtype (apex's fused kernels' numerics)."""
  F = torch.nn.functional
  as_float = lambda p: None if p is None else p.float()

  class FusedRMSNorm(torch.nn.RMSNorm):
    def forward(self, x):
      return F.rms_norm(x.float(), self.normalized_shape, as_float(self.weight),
                        self.eps).to(x.dtype)

  class FusedLayerNorm(torch.nn.LayerNorm):
    def forward(self, x):
      return F.layer_norm(x.float(), self.normalized_shape, as_float(self.weight),
                          as_float(self.bias), self.eps).to(x.dtype)

  module = types.ModuleType("apex.normalization")
  module.FusedRMSNorm, module.FusedLayerNorm = FusedRMSNorm, FusedLayerNorm
  return module


def install_substitutes(torch) -> list[str]:
  """Registers stand-ins for flash_attn and apex where they are not importable."""
  made = []
  # transformers (imported by diffusers, which the official code imports) probes for flash_attn
  # with find_spec, which fails on a stand-in module: let it probe before one exists.
  importlib.import_module("diffusers.models.embeddings")
  if importlib.util.find_spec("flash_attn") is None:
    sys.modules["flash_attn"] = types.ModuleType("flash_attn")
    sys.modules["flash_attn"].flash_attn_varlen_func = varlen_attention
    made.append("flash_attn.flash_attn_varlen_func -> torch SDPA per cu_seqlens segment")
  if importlib.util.find_spec("apex") is None:
    sys.modules["apex"] = types.ModuleType("apex")
    sys.modules["apex.normalization"] = sys.modules["apex"].normalization = apex_norms(torch)
    made.append("apex FusedRMSNorm/FusedLayerNorm -> torch norms, float32 statistics")
  return made


def tiny_overrides() -> list[str]:
  """OmegaConf dotlist setting the official config to the project's tiny DiT and VAE sizes."""
  from seedvr2_jax.models.dit import config as dit_config
  from seedvr2_jax.models.vae import config as vae_config
  return ([f"dit.model.{k}={json.dumps(v)}" for k, v in dit_config.TINY["3b"].items()] +
          [f"vae.model.{k}={json.dumps(v)}" for k, v in vae_config.TINY.items()])


def official_runner(official_dir: str, overrides: list[str], dtype: str, device, log):
  """The official `VideoDiffusionInfer` with its DiT and VAE built from configs_3b/main.yaml
  (random weights) on `device`; returns (runner, DiT kwargs, VAE kwargs, state dicts)."""
  import torch
  import torch.distributed as dist

  from seedvr2_jax.errors import ConfigError

  if not os.path.isfile(os.path.join(official_dir, "configs_3b", "main.yaml")):
    raise ConfigError(f"{official_dir}: no official checkout (run experiments/official/fetch.sh)")
  for note in install_substitutes(torch):
    log(f"substituted: {note}")
  official_dir = os.path.abspath(official_dir)
  sys.path.insert(0, official_dir)
  try:
    with contextlib.chdir(official_dir):  # the configs' __inherit__ paths are relative
      from common import distributed
      from common.config import create_object, load_config
      from omegaconf import OmegaConf
      from projects.video_diffusion_sr.infer import VideoDiffusionInfer
      config = load_config("configs_3b/main.yaml", overrides)
      config.vae.dtype = dtype
      dit_kwargs, vae_kwargs = (
          {k: v for k, v in OmegaConf.to_object(m).items() if k != "__object__"}
          for m in (config.dit.model, config.vae.model))
      with torch.device(device):
        dit, vae = create_object(config.dit.model), create_object(config.vae.model)
  except ModuleNotFoundError as e:
    raise ConfigError(f"the official code needs the module {e.name!r}: install it or carry its "
                      "wheel (docs/benchmarks.md, 'Against the official code')") from None
  if device.type == "cpu":  # the official helpers place tensors on get_device(), always CUDA
    original = distributed.get_device
    for module in list(sys.modules.values()):
      if getattr(module, "get_device", None) is original:
        module.get_device = lambda: device
    log("patched: common.distributed.get_device -> cpu")
  if not dist.is_initialized():  # the VAE's memory-limited convolutions ask for the rank
    dist.init_process_group("gloo", init_method=f"file://{tempfile.mkdtemp()}/init", rank=0,
                            world_size=1)
  generator = torch.Generator(device).manual_seed(0)
  with torch.no_grad():
    for module in (dit, vae):
      for p in module.parameters():
        p.add_(0.02 * torch.randn(p.shape, generator=generator, device=device))
  to_numpy = lambda sd: {k: v.detach().float().cpu().numpy() for k, v in sd.items()}
  state_dicts = to_numpy(dit.state_dict()), to_numpy(vae.state_dict())
  runner = VideoDiffusionInfer(config)
  runner.dit = dit.eval()
  runner.vae = vae.requires_grad_(False).eval().to(dtype=getattr(torch, dtype))
  runner.vae.set_causal_slicing(**config.vae.slicing)
  runner.vae.set_memory_limit(**config.vae.memory_limit)
  return runner, dit_kwargs, vae_kwargs, state_dicts


def time_torch(fn, warmup: int, iters: int, sync) -> tuple[dict, object]:
  """Median and min seconds of fn() after warm-up calls, synchronised; and its last output."""
  for _ in range(warmup):
    out = fn()
  sync()
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    out = fn()
    sync()
    times.append(time.perf_counter() - start)
  return dict(seconds=statistics.median(times), seconds_min=min(times)), out


def run_official(runner, clip_thwc, noise, txt, dtype, device, warmup, iters):
  """Times the official stages; returns (rows, outputs as float32 numpy arrays)."""
  import torch
  from einops import rearrange
  from models.dit_v2 import na

  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  autocast = lambda: torch.autocast(device.type, torch.bfloat16, enabled=dtype == "bfloat16")
  to_dev = lambda a: torch.from_numpy(a).to(device)
  vae_dtype = getattr(torch, dtype)
  x_cthw = to_dev(clip_thwc).permute(3, 0, 1, 2).to(vae_dtype).contiguous()
  rows, outs = {}, {}
  with torch.no_grad():
    rows["encode"], (lq_latent,) = time_torch(lambda: runner.vae_encode([x_cthw]), warmup, iters,
                                              sync)
    noise_t = to_dev(noise)
    vid, vid_shape = na.flatten([noise_t])
    cond, _ = na.flatten([runner.get_condition(noise_t, latent_blur=lq_latent, task="sr")])
    txt_t, txt_shape = na.flatten([to_dev(txt)])
    timestep = torch.full((1,), 1000.0, device=device)

    def dit():
      with autocast():
        return runner.dit(vid=torch.cat([vid, cond], dim=-1), txt=txt_t, vid_shape=vid_shape,
                          txt_shape=txt_shape, timestep=timestep).vid_sample

    rows["dit"], velocity = time_torch(dit, warmup, iters, sync)
    x0 = na.unflatten(vid - velocity.float(), vid_shape)[0]

    def decode():
      with autocast():
        return runner.vae_decode([x0])[0]

    rows["decode"], decoded = time_torch(decode, warmup, iters, sync)
    scale = runner.config.vae.scaling_factor
    shift = runner.config.vae.get("shifting_factor", 0.0)
    mean = runner.vae.encode(x_cthw[None]).posterior.mean
    outs["encode"] = rearrange((mean.float() - shift) * scale, "1 c t h w -> t h w c")
  outs.update(lq_latent=lq_latent, dit=x0, decode=decoded.permute(1, 2, 3, 0))
  return rows, {k: v.float().cpu().numpy() for k, v in outs.items()}


def run_ours(dit_kwargs, vae_kwargs, state_dicts, clip_thwc, noise, txt, official, dtype,
             warmup, iters):
  """Our stages on the official weights and intermediates; returns (rows, max rel diffs)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from seedvr2_jax.convert import dit as dit_convert
  from seedvr2_jax.convert import vae as vae_convert
  from seedvr2_jax.infer import one_step
  from seedvr2_jax.infer.options import RestoreOptions
  from seedvr2_jax.models.dit import config as dit_config
  from seedvr2_jax.models.vae import config as vae_config
  from seedvr2_jax.parity.common import max_rel_err
  from seedvr2_jax.utils.benchmark import time_jitted

  numerics = dict(param_dtype=dtype, dtype=dtype)
  dit_cfg = dit_config.from_official(dit_kwargs, "3b", round_qkv_bf16=dtype == "float32",
                                     **numerics)
  dit_graph, dit_state = dit_convert.load_state(state_dicts[0], dit_cfg)
  vae_graph, vae_state = vae_convert.load_state(state_dicts[1],
                                                vae_config.from_official(vae_kwargs, **numerics))
  opts = RestoreOptions()
  clip = jnp.asarray(clip_thwc)[None]
  lq_latent = jnp.asarray(official["lq_latent"])[None]
  noise, txt = jnp.asarray(noise)[None], jnp.asarray(txt)[None]
  eps = jax.random.normal(jax.random.key(0), lq_latent.shape)
  vae_fn = lambda fn: lambda state, *a: fn(nnx.merge(vae_graph, state), *a)
  stages = {
      "encode": (vae_fn(lambda v, x, e: one_step.encode_lq(v, x, e, opts)), vae_state, clip, eps),
      "dit": (lambda s, n, c, t: one_step.predict_x0(nnx.merge(dit_graph, s), n, c, t),
              dit_state, noise, lq_latent, txt),
      "decode": (vae_fn(lambda v, x: one_step.decode_x0(v, x, opts)), vae_state,
                 jnp.asarray(official["dit"])[None]),
  }
  precision = "highest" if dtype == "float32" else "default"
  rows, diffs = {}, {}
  with jax.default_matmul_precision(precision):
    for name, (fn, *args) in stages.items():
      rows[name] = time_jitted(fn, *args, warmup=warmup, iters=iters)
      if name == "encode":  # compare the posterior means (the official sample's noise is torch's)
        args = (*args[:-1], None)
      diffs[name] = max_rel_err(np.asarray(jax.jit(fn)(*args), np.float32)[0], official[name])
  return rows, diffs


def parse_run(spec: str) -> tuple[int, int, int]:
  """FRAMES:HxW -> (frames, height, width), checked."""
  from seedvr2_jax.errors import InputError
  try:
    frames, size = spec.split(":")
    frames = int(frames)
    height, width = (int(v) for v in size.split("x"))
  except ValueError:
    raise InputError(f"run {spec!r} is not FRAMES:HxW (e.g. 100:768x1344)") from None
  if frames < 1 or height <= 0 or width <= 0 or height % 16 or width % 16:
    raise InputError(f"run {spec!r}: need frames >= 1 and H, W positive multiples of 16")
  return frames, height, width


def run_one(spec: str, args, log) -> dict:
  import jax
  import numpy as np
  import torch

  from seedvr2_jax.infer import preprocess

  frames, height, width = parse_run(spec)
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  runner, dit_kwargs, vae_kwargs, state_dicts = official_runner(
      args.official_dir, tiny_overrides() if args.tiny else [], args.dtype, device, log)
  rng = np.random.default_rng(0)
  clip = rng.uniform(-1, 1, (frames, height, width, 3)).astype(np.float32)
  clip = np.asarray(preprocess.pad_frames(clip))
  latent_frames = (clip.shape[0] - 1) // 4 + 1
  noise = rng.standard_normal((latent_frames, height // 8, width // 8, 16), np.float32)
  txt = rng.standard_normal((TXT_LEN, dit_kwargs["txt_in_dim"]), np.float32)
  official_rows, official = run_official(runner, clip, noise, txt, args.dtype, device,
                                         args.warmup, args.iters)
  del runner
  gc.collect()
  if device.type == "cuda":
    torch.cuda.empty_cache()
  ours_rows, diffs = run_ours(dit_kwargs, vae_kwargs, state_dicts, clip, noise, txt, official,
                              args.dtype, args.warmup, args.iters)
  official_s = {k: official_rows[k]["seconds"] for k in STAGES}
  ours_s = {k: ours_rows[k]["seconds"] for k in STAGES}
  return dict(spec=spec, frames=frames, size=f"{width}x{height}", tiny=args.tiny,
              dtype=args.dtype, official_s=official_s, ours_s=ours_s,
              official_model_s=sum(official_s.values()), ours_model_s=sum(ours_s.values()),
              ratio=sum(official_s.values()) / sum(ours_s.values()), max_rel_diff=diffs,
              ours_compile_s={k: ours_rows[k]["compile_s"] for k in STAGES},
              device=(torch.cuda.get_device_name() if device.type == "cuda" else "cpu"),
              jax_device=jax.devices()[0].device_kind, torch=torch.__version__,
              jax=jax.__version__, official_commit=official_commit(args.official_dir))


def official_commit(official_dir: str) -> str:
  """The checkout's commit; "unknown" for a copy without its own .git (git would name the
  commit of a repository around it)."""
  if not os.path.exists(os.path.join(official_dir, ".git")):
    return "unknown"
  proc = subprocess.run(["git", "-C", official_dir, "rev-parse", "HEAD"], capture_output=True,
                        text=True)
  return proc.stdout.strip() or "unknown"


def table(r: dict) -> str:
  lines = [f"{r['frames']} frames at {r['size']}, {r['dtype']}{', tiny' if r['tiny'] else ''}; "
           f"official on {r['device']} (torch {r['torch']}, SeedVR {r['official_commit'][:7]}),"
           f" ours on {r['jax_device']} (jax {r['jax']})", "",
           "| stage | official s | ours s | official / ours | max rel diff |",
           "| --- | --- | --- | --- | --- |"]
  for k in STAGES:
    o, s = r["official_s"][k], r["ours_s"][k]
    lines.append(f"| {k} | {o:.3f} | {s:.3f} | {o / s:.2f}x | {r['max_rel_diff'][k]:.2e} |")
  lines.append(f"| model total | {r['official_model_s']:.3f} | {r['ours_model_s']:.3f} | "
               f"{r['ratio']:.2f}x | |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", nargs="+", default=["100:768x1344"])
  parser.add_argument("--iters", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
  parser.add_argument("--tiny", action="store_true", help="tiny models (a CPU smoke test)")
  parser.add_argument("--official-dir", default=OFFICIAL_DIR)
  parser.add_argument("--out", default=None, help="append JSON lines here")
  args = parser.parse_args()
  if args.iters < 1 or args.warmup < 0:
    parser.error("need --iters >= 1 and --warmup >= 0")
  # torch and JAX share the GPU: JAX must not reserve most of its memory up front.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  from seedvr2_jax.errors import ConfigError, SeedVR2Error
  try:
    if importlib.util.find_spec("torch") is None:
      raise ConfigError("torch is not installed: the official code needs it (docs/benchmarks.md)")
    for spec in args.runs:
      parse_run(spec)
    for spec in args.runs:
      r = run_one(spec, args, log=lambda msg: print(msg, flush=True))
      print(table(r))
      print(json.dumps(r), flush=True)
      if args.out:
        with open(args.out, "a") as f:
          f.write(json.dumps(r) + "\n")
  except SeedVR2Error as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  sys.path.insert(0, ROOT)
  main()
