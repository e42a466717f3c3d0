"""The converted-model checkpoint: one Orbax directory with the DiT, the VAE, the text embeddings
and the model config; made once from the official files, loaded by `restore`, exported back.

Layout (Orbax composite): `config` (JSON: format, DiT and VAE architecture), `dit` and `vae`
(parameter trees), `text` ({"pos": (58, 5120), "neg": (64, 5120)} embeddings) and, for a
converted model, `buffers` ({"rope_freqs": (num_layers, F)}: the official file's RoPE buffers as
stored, so that export reproduces them byte for byte). Orbax writes to a temporary directory and
renames it when complete. The weights are stored without compression: zstd saves about a fifth of
the disk of bf16 weights and halves the read speed of every restore (docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from seedvr2_jax.convert import dit as dit_convert
from seedvr2_jax.convert import nnx_map
from seedvr2_jax.convert import vae as vae_convert
from seedvr2_jax.convert.safetensors_io import save_file
from seedvr2_jax.convert.state_dict import open_state_dict
from seedvr2_jax.errors import CheckpointError, InputError
from seedvr2_jax.models.dit import config as dit_config
from seedvr2_jax.models.vae import config as vae_config
from seedvr2_jax.utils import atomic

FORMAT = "seedvr2-jax"
VERSION = 1
_NUMERICS = ("param_dtype", "dtype", "attention_backend", "round_qkv_bf16")


@dataclasses.dataclass
class Bundle:
  dit_cfg: dit_config.NaDiTConfig
  vae_cfg: vae_config.VAEConfig
  dit_state: nnx.State
  vae_state: nnx.State
  pos_emb: jax.Array
  neg_emb: jax.Array
  # (num_layers, F) RoPE buffers of the official file converted from; None when trained here.
  rope_buffers: np.ndarray | None = None


def detect_variant(state_dict) -> str:
  """"3b" (SwiGLU, `proj_in_gate`) or "7b" (GELU MLP with biases), from the key names."""
  if any(k.endswith("mlp.vid.proj_in_gate.weight") or k.endswith("mlp.all.proj_in_gate.weight")
         for k in state_dict):
    return "3b"
  if any(k.endswith("mlp.vid.proj_in.bias") for k in state_dict):
    return "7b"
  raise CheckpointError("cannot tell the DiT variant from the checkpoint keys (no SwiGLU "
                        "proj_in_gate and no GELU proj_in.bias): is this a SeedVR2 DiT?")


def _single_tensor(path: str) -> np.ndarray:
  tensors = open_state_dict(path)
  if len(tensors) != 1:
    raise CheckpointError(f"{path}: expected one tensor (a text embedding), found "
                          f"{len(tensors)}: {', '.join(list(tensors)[:5])}")
  value = np.asarray(tensors[next(iter(tensors))])
  if value.ndim != 2:
    raise CheckpointError(f"{path}: text embedding must be (tokens, dim), got {value.shape}")
  return value


def _arch(cfg) -> dict:
  return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NUMERICS}


def _check_target(out_dir: str, overwrite: bool) -> None:
  if os.path.exists(out_dir) and not overwrite:
    raise InputError(f"{out_dir} exists (pass --overwrite to replace it)")


def _checkpointer() -> ocp.Checkpointer:
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def convert(dit_path: str, vae_path: str, pos_path: str, neg_path: str, out_dir: str, *,
            dtype: str = "float32", variant: str | None = None,
            dit_cfg: dit_config.NaDiTConfig | None = None,
            vae_cfg: vae_config.VAEConfig | None = None, overwrite: bool = False,
            log=print) -> Bundle:
  """Official files (.pth or .safetensors) -> an Orbax checkpoint directory, tensor by tensor.

  The architectures default to the official ones (DiT variant detected from the keys); pass
  `dit_cfg` / `vae_cfg` for other sizes (e.g. the tiny test models).
  """
  out_dir = os.path.abspath(out_dir)
  _check_target(out_dir, overwrite)
  dit_sd = open_state_dict(dit_path)
  found = detect_variant(dit_sd)
  if variant is not None and variant != found:
    raise CheckpointError(f"{dit_path} holds a {found} DiT, not the requested {variant}")
  dit_cfg = dataclasses.replace(dit_cfg or dit_config.official(found), param_dtype=dtype)
  if dit_cfg.variant != found:
    raise CheckpointError(f"{dit_path} holds a {found} DiT but the config is {dit_cfg.variant}")
  log(f"DiT {found}: {len(dit_sd)} tensors from {dit_path}")
  _, dit_state = dit_convert.load_state(dit_sd, dit_cfg)
  rope_buffers = dit_convert.read_rope_buffers(dit_sd, dit_cfg)
  vae_cfg = dataclasses.replace(vae_cfg or vae_config.VAEConfig(), param_dtype=dtype)
  vae_sd = open_state_dict(vae_path)
  log(f"VAE: {len(vae_sd)} tensors from {vae_path}")
  _, vae_state = vae_convert.load_state(vae_sd, vae_cfg)
  pos, neg = (jnp.asarray(_single_tensor(p), jnp.dtype(dtype)) for p in (pos_path, neg_path))
  if pos.shape[1] != dit_cfg.txt_in_dim or neg.shape[1] != dit_cfg.txt_in_dim:
    raise CheckpointError(f"text embeddings {pos.shape}, {neg.shape} do not match the DiT's "
                          f"text width {dit_cfg.txt_in_dim}")
  bundle = Bundle(dit_cfg, vae_cfg, dit_state, vae_state, pos, neg, rope_buffers)
  save(bundle, out_dir, overwrite=overwrite)
  log(f"wrote {out_dir}")
  return bundle


def save(bundle: Bundle, out_dir: str, *, overwrite: bool = False) -> None:
  config = {"format": FORMAT, "version": VERSION, "dit": _arch(bundle.dit_cfg),
            "vae": _arch(bundle.vae_cfg), "dtype": bundle.dit_cfg.param_dtype}
  trees = dict(dit=nnx.to_pure_dict(bundle.dit_state), vae=nnx.to_pure_dict(bundle.vae_state),
               text={"pos": bundle.pos_emb, "neg": bundle.neg_emb})
  if bundle.rope_buffers is not None:
    trees["buffers"] = {"rope_freqs": bundle.rope_buffers}
  uncompressed = {name: ocp.PyTreeCheckpointHandler(use_compression=False) for name in trees}
  items = dict(config=ocp.args.JsonSave(config),
               **{name: ocp.args.PyTreeSave(tree) for name, tree in trees.items()})
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler(
      config=ocp.JsonCheckpointHandler(), **uncompressed)) as checkpointer:
    checkpointer.save(os.path.abspath(out_dir), force=overwrite, args=ocp.args.Composite(**items))


@dataclasses.dataclass(frozen=True)
class Header:
  """What a checkpoint holds besides its weights: the model configs and the text embeddings
  (read in a moment, so that programs can be built while the weights load)."""

  dit_cfg: dit_config.NaDiTConfig
  vae_cfg: vae_config.VAEConfig
  pos_emb: jax.Array
  neg_emb: jax.Array


def load_header(ckpt_dir: str, *, param_dtype: str | None = None, **numerics) -> Header:
  """The configs (parameters of `param_dtype` if given, else as saved) and text embeddings of
  an Orbax checkpoint directory."""
  ckpt_dir = os.path.abspath(ckpt_dir)
  if not os.path.isdir(os.path.join(ckpt_dir, "config")):
    raise CheckpointError(f"{ckpt_dir}: not a seedvr2-jax checkpoint (no config item; make one "
                          "with `seedvr2-jax convert`)")
  with _checkpointer() as checkpointer:
    config = checkpointer.restore(ckpt_dir, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))["config"]
    if config.get("format") != FORMAT:
      raise CheckpointError(f"{ckpt_dir}: unknown checkpoint format {config.get('format')!r}")
    text = checkpointer.restore(ckpt_dir, args=ocp.args.Composite(
        text=ocp.args.StandardRestore()))["text"]
  dtype = param_dtype or config["dtype"]
  dit_cfg = dit_config.NaDiTConfig(**config["dit"], param_dtype=dtype, **numerics)
  vae_cfg = vae_config.VAEConfig(**config["vae"], param_dtype=dtype,
                                 dtype=numerics.get("dtype", "float32"))
  pos, neg = (jnp.asarray(text[k], jnp.dtype(dtype)) for k in ("pos", "neg"))
  return Header(dit_cfg, vae_cfg, pos, neg)


def weight_bytes(ckpt_dir: str, header: Header) -> int:
  """Bytes of the DiT's and VAE's weights as `load` returns them (in `header`'s parameter
  dtype), from the checkpoint's array metadata: no weight is read."""
  itemsize = jnp.dtype(header.dit_cfg.param_dtype).itemsize
  total = 0
  with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
    for item in ("dit", "vae"):
      metadata = checkpointer.metadata(os.path.join(os.path.abspath(ckpt_dir), item))
      leaves = jax.tree.leaves(metadata.item_metadata.tree)
      total += sum(int(np.prod(leaf.shape)) for leaf in leaves)
  return total * itemsize


def load(ckpt_dir: str, *, param_dtype: str | None = None, dit: bool = True,
         header: Header | None = None, sharding: jax.sharding.Sharding | None = None,
         **numerics) -> Bundle:
  """An Orbax checkpoint directory -> Bundle (parameters cast to `param_dtype` if given;
  `dit=False` skips reading the DiT: `dit_state` is None). `header`: its `load_header`, when
  already read (then `param_dtype` and `numerics` are the header's). `sharding`: where every
  weight is read into (e.g. pinned host memory; default: the default device)."""
  ckpt_dir = os.path.abspath(ckpt_dir)
  header = header or load_header(ckpt_dir, param_dtype=param_dtype, **numerics)
  _, vae_abstract = vae_convert.abstract_model(header.vae_cfg)
  target = lambda state: jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      nnx.to_pure_dict(state))
  items = {"vae": ocp.args.StandardRestore(target(vae_abstract))}
  dit_abstract = dit_convert.abstract_model(header.dit_cfg)[1] if dit else None
  if dit:
    items["dit"] = ocp.args.StandardRestore(target(dit_abstract))
  if dit and os.path.isdir(os.path.join(ckpt_dir, "buffers")):
    items["buffers"] = ocp.args.StandardRestore()
  try:
    with _checkpointer() as checkpointer:
      restored = checkpointer.restore(ckpt_dir, args=ocp.args.Composite(**items))
  except (ValueError, KeyError) as e:
    raise CheckpointError(f"{ckpt_dir}: does not match its config ({e})") from None
  if dit:
    nnx.replace_by_pure_dict(dit_abstract, restored["dit"])
  nnx.replace_by_pure_dict(vae_abstract, restored["vae"])
  rope_buffers = restored["buffers"]["rope_freqs"] if "buffers" in items else None
  return Bundle(header.dit_cfg, header.vae_cfg, dit_abstract, vae_abstract, header.pos_emb,
                header.neg_emb, None if rope_buffers is None else np.asarray(rope_buffers))


def export(ckpt_dir: str, out_dir: str, *, overwrite: bool = False, log=print) -> list[str]:
  """Writes the official-key safetensors of a checkpoint: DiT, VAE and the text embeddings."""
  out_dir = os.path.abspath(out_dir)
  _check_target(out_dir, overwrite)
  bundle = load(ckpt_dir)
  with atomic.atomic_dir(out_dir) as tmp:
    files = {f"seedvr2_ema_{bundle.dit_cfg.variant}.safetensors":
             dit_convert.export_state(bundle.dit_state, bundle.dit_cfg, bundle.rope_buffers),
             "ema_vae.safetensors": nnx_map.export_state(bundle.vae_state),
             "pos_emb.safetensors": {"pos_emb": np.asarray(bundle.pos_emb)},
             "neg_emb.safetensors": {"neg_emb": np.asarray(bundle.neg_emb)}}
    for name, tensors in files.items():
      save_file(tensors, os.path.join(tmp, name), metadata={"format": "pt"})
      log(f"{name}: {len(tensors)} tensors")
  return sorted(files)
