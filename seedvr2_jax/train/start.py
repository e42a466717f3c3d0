"""What a run starts from: the DiT's parameters (a converted or exported checkpoint, or a random
initialisation), the VAE and the text embeddings, read once and placed on the mesh."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from seedvr2_jax.convert import bundle as bundle_lib
from seedvr2_jax.errors import ConfigError
from seedvr2_jax.models.dit import config as dit_config
from seedvr2_jax.models.dit.block import NaMMSRTransformerBlock
from seedvr2_jax.models.dit.nadit import NaDiT
from seedvr2_jax.models.vae import autoencoder
from seedvr2_jax.models.vae import config as vae_config
from seedvr2_jax.parallel import sharding
from seedvr2_jax.train.state import split_model

# Config fields that a run may set differently from the checkpoint it starts from.
_DIT_NUMERICS = ("param_dtype", "dtype", "attention_backend", "round_qkv_bf16", "remat",
                 "remat_names", "scan_layers")
_VAE_NUMERICS = ("param_dtype", "dtype")


@dataclasses.dataclass
class Model:
  """A model split for training: graph, float32 parameters and the other variables (buffers),
  placed on the mesh, and the parameters' shardings."""

  graphdef: nnx.GraphDef
  params: nnx.State
  rest: nnx.State
  params_sharding: nnx.State

  def merge(self, params=None) -> nnx.Module:
    return nnx.merge(self.graphdef, self.params if params is None else params, self.rest)


@dataclasses.dataclass
class Start:
  """The run's starting point. `dit` is None when not asked for."""

  dit_cfg: dit_config.NaDiTConfig
  vae_cfg: vae_config.VAEConfig
  dit: Model | None
  vae_state: nnx.State  # every variable of the VAE
  txt_pos: jax.Array  # (L, D) positive text embedding
  txt_neg: jax.Array  # (L', D) negative text embedding


def dit_config_of(config: ml_collections.ConfigDict) -> dit_config.NaDiTConfig:
  return dit_config.from_config_dict(config.model)


def vae_config_of(config: ml_collections.ConfigDict) -> vae_config.VAEConfig:
  return vae_config.from_config_dict(config.vae)


def rules_of(config: ml_collections.ConfigDict) -> sharding.Rules:
  return tuple(map(tuple, config.sharding_rules))


def is_abstract(tree) -> bool:
  """Whether `tree` holds shapes (jax.ShapeDtypeStruct leaves) rather than arrays."""
  return any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(tree))


def put(tree, shardings):
  """jax.device_put, or for an abstract `tree` the same shapes carrying `shardings`."""
  if not is_abstract(tree):
    return jax.device_put(tree, shardings)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                      shardings)


def apply(fn, *args, abstract: bool):
  """fn(*args), or with `abstract` the shapes of its result (nnx.eval_shape: nothing computed;
  `args` may be abstract, modules included)."""
  return nnx.eval_shape(fn, *args) if abstract else fn(*args)


def place(model: nnx.Module, mesh, rules) -> Model:
  """Splits `model` and places its parameters by the logical-axis `rules`, the rest replicated
  (an abstract model's shapes get the shardings)."""
  graphdef, params, rest = split_model(model)
  params_sharding = sharding.state_shardings(params, mesh, rules)
  rep = sharding.replicated(mesh)
  return Model(graphdef, put(params, params_sharding), put(rest, jax.tree.map(lambda _: rep, rest)),
               params_sharding)


def load(config: ml_collections.ConfigDict, mesh, *, dit: bool = True,
         abstract: bool = False) -> Start:
  """Reads `config.init.checkpoint` once (its DiT only with `dit`), or initialises randomly from
  `config.seed`; the checkpoint's architectures must equal the config's. `abstract`: the same
  Start with shapes for arrays (jax.ShapeDtypeStruct; parameters with their shardings), nothing
  read or allocated (ahead-of-time compilation, train/aot.py)."""
  dit_cfg, vae_cfg = dit_config_of(config), vae_config_of(config)
  rules = rules_of(config)
  if abstract:
    model = place(nnx.eval_shape(lambda: NaDiT(dit_cfg, nnx.Rngs(0))), mesh, rules) if dit else None
    vae_state = nnx.state(nnx.eval_shape(lambda: autoencoder.random_init(vae_cfg, 0)))
    text = lambda length: jax.ShapeDtypeStruct((length, dit_cfg.txt_in_dim), jnp.float32)
    return Start(dit_cfg, vae_cfg, model, vae_state, text(config.text.pos_length),
                 text(config.text.neg_length))
  if config.init.checkpoint:
    bundle = bundle_lib.load(config.init.checkpoint, param_dtype="float32", dit=dit,
                             dtype=dit_cfg.dtype)
    if dataclasses.replace(bundle.vae_cfg, **{k: getattr(vae_cfg, k) for k in _VAE_NUMERICS}
                           ) != vae_cfg:
      raise ConfigError(f"{config.init.checkpoint}: its VAE config differs from config.vae")
    model = None
    if dit:
      if dataclasses.replace(bundle.dit_cfg, **{k: getattr(dit_cfg, k) for k in _DIT_NUMERICS}
                             ) != dit_cfg:
        raise ConfigError(f"{config.init.checkpoint}: its DiT config differs from config.model")
      model = place(nnx.merge(nnx.graphdef(nnx.eval_shape(lambda: NaDiT(dit_cfg, nnx.Rngs(0)))),
                              bundle.dit_state), mesh, rules)
    return Start(dit_cfg, vae_cfg, model, bundle.vae_state, bundle.pos_emb, bundle.neg_emb)
  model = random_dit(dit_cfg, config.seed, mesh, rules) if dit else None
  vae_state = nnx.state(autoencoder.random_init(vae_cfg, config.seed + 1))
  keys = jax.random.split(jax.random.key(config.seed + 2))
  txt_pos = jax.random.normal(keys[0], (config.text.pos_length, dit_cfg.txt_in_dim))
  txt_neg = jax.random.normal(keys[1], (config.text.neg_length, dit_cfg.txt_in_dim))
  return Start(dit_cfg, vae_cfg, model, vae_state, txt_pos, txt_neg)


def random_dit(cfg: dit_config.NaDiTConfig, seed: int, mesh, rules) -> Model:
  """A randomly initialised NaDiT placed on the mesh (`random_split`)."""
  graphdef, abstract_params, abstract_rest = split_model(
      nnx.eval_shape(lambda: NaDiT(cfg, nnx.Rngs(0))))
  params_sharding = sharding.state_shardings(abstract_params, mesh, rules)
  rest_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), abstract_rest)
  params, rest = random_split(cfg, seed, params_sharding, rest_sharding)
  return Model(graphdef, params, rest, params_sharding)


def random_split(cfg: dit_config.NaDiTConfig, seed: int, params_sharding, rest_sharding):
  """(params, rest) of a randomly initialised NaDiT, placed with the given shardings.

  One compiled program per distinct block graph (4 for the official 3B, 2 for the 7B) makes
  every block from its own key, and one more the layers around them, so that the compile time
  does not grow with the depth (docs/benchmarks.md: the 3B's initialisation in one program)."""
  keys = jax.random.split(jax.random.key(seed), cfg.num_layers + 1)
  abstract = nnx.eval_shape(lambda: NaDiT(cfg, nnx.Rngs(0)))
  graphdefs = [nnx.graphdef(block) for block in abstract.blocks]
  first_of = {}
  for i, graphdef in enumerate(graphdefs):
    first_of.setdefault(graphdef, i)
  inits = {}
  states = []
  for i, graphdef in enumerate(graphdefs):
    layer = first_of[graphdef]
    if layer not in inits:
      make = lambda key, layer=layer: split_model(NaMMSRTransformerBlock(
          cfg, layer, nnx.Rngs(key)))[1:]
      inits[layer] = jax.jit(make, out_shardings=tuple(
          tree["blocks"][i] if "blocks" in tree and i in tree["blocks"] else None
          for tree in (params_sharding, rest_sharding)))  # a block without buffers: no rest
    states.append(inits[layer](keys[i]))

  def assemble(key, states):
    blocks = [nnx.merge(graphdef, *state) for graphdef, state in zip(graphdefs, states)]
    return split_model(NaDiT(cfg, nnx.Rngs(key), blocks))[1:]

  return jax.jit(assemble, out_shardings=(params_sharding, rest_sharding),
                 donate_argnums=1)(keys[-1], states)
