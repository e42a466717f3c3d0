"""CLIP-IQA (Wang, Chan and Loy, "Exploring CLIP for Assessing the Look and Feel of Images",
AAAI 2023), no-reference, higher is better, in [0, 1]: a port of pyiqa's default `clipiqa`
(OpenAI CLIP RN50, five antonym prompt pairs, no positional embedding in the attention pool so
any image size works).

Score: the image (full resolution, no resizing) normalised with CLIP's mean/std -> the modified
ResNet-50 (three-conv stem, anti-aliased strided bottlenecks, eval-mode BatchNorm) -> attention
pooling of the mean token over all tokens (no positional embedding) -> image feature; the ten
prompts' text features (CLIP's text transformer, computed once); cosine similarities times
exp(logit_scale); per pair the softmax probability of the positive prompt; their mean.

Weights: OpenAI CLIP RN50 as a state_dict (CLIP's own names: `visual.*`, `transformer.*`,
`token_embedding.weight`, ...). OpenAI's `RN50.pt` is a TorchScript archive, which is not read
here: use open_clip's `RN50` / `openai` file (`open_clip_pytorch_model.bin` or
`open_clip_model.safetensors`, the same names) or save `torch.jit.load("RN50.pt").state_dict()`
as `clip_rn50.pth`, in the `--iqa-weights` folder.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from seedvr2_jax.metrics import torch_layers as tl
from seedvr2_jax.metrics import torch_weights

FILES = ("clip_rn50.pth", "clip_rn50.safetensors", "open_clip_model.safetensors",
         "open_clip_pytorch_model.bin")
SOURCE = "OpenAI CLIP RN50 state_dict, e.g. open_clip's RN50 'openai' weights"
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
# pyiqa's prompts ("Good image", "bad image"), ("Sharp image", "blurry image"), ("sharp edges",
# "blurry edges"), ("High resolution image", "low resolution image"), ("Noise-free image",
# "noisy image"), as CLIP's BPE tokenizer encodes them (start and end tokens included).
PROMPT_TOKENS = ((49406, 886, 2867, 49407), (49406, 2103, 2867, 49407),
                 (49406, 8157, 2867, 49407), (49406, 21977, 2867, 49407),
                 (49406, 8157, 20938, 49407), (49406, 21977, 20938, 49407),
                 (49406, 1400, 9977, 2867, 49407), (49406, 1042, 9977, 2867, 49407),
                 (49406, 9307, 268, 1139, 2867, 49407), (49406, 33495, 2867, 49407))


@dataclasses.dataclass(frozen=True)
class Config:
  layers: tuple[int, ...] = (3, 4, 6, 3)
  width: int = 64  # vision stem width; stage widths x1, x2, x4, x8, four times as many out
  embed: int = 1024
  pool_grid: int = 7  # the attention pool's (unused) positional embedding: grid^2 + 1 rows
  text_width: int = 512
  text_heads: int = 8
  text_layers: int = 12
  context: int = 77
  vocab: int = 49408

  @property
  def vision_heads(self) -> int:
    return self.width * 32 // 64


def _bn_shapes(prefix: str, c: int) -> dict:
  return {f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")}


def expected_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
  """CLIP state_dict names -> shapes (what the score reads)."""
  w = cfg.width
  s = {"visual.conv1.weight": (w // 2, 3, 3, 3), "visual.conv2.weight": (w // 2, w // 2, 3, 3),
       "visual.conv3.weight": (w, w // 2, 3, 3)}
  for i, c in ((1, w // 2), (2, w // 2), (3, w)):
    s.update(_bn_shapes(f"visual.bn{i}", c))
  inplanes = w
  for stage, blocks in enumerate(cfg.layers):
    planes = w * 2 ** stage
    for b in range(blocks):
      p = f"visual.layer{stage + 1}.{b}"
      s.update({f"{p}.conv1.weight": (planes, inplanes, 1, 1),
                f"{p}.conv2.weight": (planes, planes, 3, 3),
                f"{p}.conv3.weight": (4 * planes, planes, 1, 1)})
      for i, c in ((1, planes), (2, planes), (3, 4 * planes)):
        s.update(_bn_shapes(f"{p}.bn{i}", c))
      if b == 0:
        s[f"{p}.downsample.0.weight"] = (4 * planes, inplanes, 1, 1)
        s.update(_bn_shapes(f"{p}.downsample.1", 4 * planes))
      inplanes = 4 * planes
  pool = "visual.attnpool"
  for proj in ("q_proj", "k_proj", "v_proj"):
    s.update({f"{pool}.{proj}.weight": (inplanes, inplanes), f"{pool}.{proj}.bias": (inplanes,)})
  s.update({f"{pool}.c_proj.weight": (cfg.embed, inplanes), f"{pool}.c_proj.bias": (cfg.embed,)})
  t = cfg.text_width
  for i in range(cfg.text_layers):
    p = f"transformer.resblocks.{i}"
    s.update({f"{p}.attn.in_proj_weight": (3 * t, t), f"{p}.attn.in_proj_bias": (3 * t,),
              f"{p}.attn.out_proj.weight": (t, t), f"{p}.attn.out_proj.bias": (t,),
              f"{p}.ln_1.weight": (t,), f"{p}.ln_1.bias": (t,), f"{p}.ln_2.weight": (t,),
              f"{p}.ln_2.bias": (t,), f"{p}.mlp.c_fc.weight": (4 * t, t),
              f"{p}.mlp.c_fc.bias": (4 * t,), f"{p}.mlp.c_proj.weight": (t, 4 * t),
              f"{p}.mlp.c_proj.bias": (t,)})
  s.update({"token_embedding.weight": (cfg.vocab, t), "positional_embedding": (cfg.context, t),
            "ln_final.weight": (t,), "ln_final.bias": (t,),
            "text_projection": (t, cfg.embed), "logit_scale": ()})
  return s


def load_weights(weights_dir: str | None, cfg: Config = Config()) -> dict:
  path = torch_weights.find(weights_dir, FILES, "clipiqa", SOURCE)
  return torch_weights.read(path, expected_shapes(cfg))


def _bn(params, prefix, x):
  """Eval-mode BatchNorm2d (eps 1e-5) on NHWC."""
  scale = params[f"{prefix}.weight"] / jnp.sqrt(params[f"{prefix}.running_var"] + 1e-5)
  return (x - params[f"{prefix}.running_mean"]) * scale + params[f"{prefix}.bias"]


def _avg_pool(x, k):
  """torch AvgPool2d(k): k x k windows, stride k, floor."""
  if k == 1:
    return x
  return jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, k, k, 1), (1, k, k, 1), "VALID") / k ** 2


def _conv_bn(params, prefix, bn, x, pad):
  return _bn(params, bn, tl.conv2d(x, params[f"{prefix}.weight"], 1, ((pad, pad), (pad, pad))))


def image_features(params: dict, cfg: Config, x_nhwc: jnp.ndarray) -> jnp.ndarray:
  """(N, H, W, 3) in [0, 1] -> (N, embed) pooled image features."""
  x = (x_nhwc - jnp.asarray(MEAN)) / jnp.asarray(STD)
  x = jax.nn.relu(_bn(params, "visual.bn1", tl.conv2d(x, params["visual.conv1.weight"], 2,
                                                      ((1, 1), (1, 1)))))
  for i in (2, 3):
    x = jax.nn.relu(_conv_bn(params, f"visual.conv{i}", f"visual.bn{i}", x, 1))
  x = _avg_pool(x, 2)
  for stage, blocks in enumerate(cfg.layers):
    for b in range(blocks):
      p, stride = f"visual.layer{stage + 1}.{b}", (2 if stage and not b else 1)
      out = jax.nn.relu(_conv_bn(params, f"{p}.conv1", f"{p}.bn1", x, 0))
      out = jax.nn.relu(_conv_bn(params, f"{p}.conv2", f"{p}.bn2", out, 1))
      out = _conv_bn(params, f"{p}.conv3", f"{p}.bn3", _avg_pool(out, stride), 0)
      if b == 0:
        x = _conv_bn(params, f"{p}.downsample.0", f"{p}.downsample.1", _avg_pool(x, stride), 0)
      x = jax.nn.relu(out + x)
  tokens = jnp.reshape(x, (x.shape[0], -1, x.shape[-1]))
  tokens = jnp.concatenate([jnp.mean(tokens, 1, keepdims=True), tokens], 1)
  pool = "visual.attnpool"
  q = tl.linear(params, f"{pool}.q_proj", tokens[:, :1])  # only the mean token's output is used
  k, v = (tl.linear(params, f"{pool}.{p}", tokens) for p in ("k_proj", "v_proj"))
  return tl.linear(params, f"{pool}.c_proj", tl.attention(q, k, v, cfg.vision_heads))[:, 0]


def text_features(params: dict, cfg: Config, tokens=PROMPT_TOKENS) -> jnp.ndarray:
  """The prompts' (P, embed) features: CLIP's causal text transformer at each end token."""
  ids = np.zeros((len(tokens), cfg.context), np.int32)
  for i, t in enumerate(tokens):
    ids[i, :len(t)] = t
  x = params["token_embedding.weight"][ids] + params["positional_embedding"]
  causal = jnp.where(jnp.tril(jnp.ones((cfg.context, cfg.context), bool)), 0.0, -jnp.inf)
  t = cfg.text_width
  for i in range(cfg.text_layers):
    p = f"transformer.resblocks.{i}"
    y = tl.layer_norm(params, f"{p}.ln_1", x, 1e-5)
    w, b = params[f"{p}.attn.in_proj_weight"], params[f"{p}.attn.in_proj_bias"]
    q, k, v = (jnp.einsum("...i,oi->...o", y, w[j * t:(j + 1) * t], precision=tl.HIGHEST)
               + b[j * t:(j + 1) * t] for j in range(3))
    x = x + tl.linear(params, f"{p}.attn.out_proj",
                      tl.attention(q, k, v, cfg.text_heads, logits_bias=causal))
    y = tl.linear(params, f"{p}.mlp.c_fc", tl.layer_norm(params, f"{p}.ln_2", x, 1e-5))
    x = x + tl.linear(params, f"{p}.mlp.c_proj", y * jax.nn.sigmoid(1.702 * y))  # QuickGELU
  x = tl.layer_norm(params, "ln_final", x, 1e-5)
  ends = x[np.arange(len(tokens)), ids.argmax(-1)]  # the end token has the largest id
  return jnp.einsum("pt,te->pe", ends, params["text_projection"], precision=tl.HIGHEST)


def score_from_features(params: dict, image_feats: jnp.ndarray,
                        text_feats: jnp.ndarray) -> jnp.ndarray:
  """(N, embed), (2P, embed) -> (N,) mean over pairs of the positive prompt's probability."""
  unit = lambda f: f / jnp.linalg.norm(f, axis=-1, keepdims=True)
  logits = jnp.exp(params["logit_scale"]) * jnp.einsum(
      "ne,pe->np", unit(image_feats), unit(text_feats), precision=tl.HIGHEST)
  probs = jax.nn.softmax(jnp.reshape(logits, (logits.shape[0], -1, 2)), -1)
  return jnp.mean(probs[..., 0], -1)


def make_clipiqa(params: dict, cfg: Config = Config()):
  """(H, W, 3) in [0, 1] -> the CLIP-IQA score; the prompt features are computed once."""
  texts = jax.jit(functools.partial(text_features, cfg=cfg))(params)

  @jax.jit
  def run(params, texts, image_hwc):
    feats = image_features(params, cfg, image_hwc[None])
    return score_from_features(params, feats, texts)[0]
  return lambda image_hwc: float(run(params, texts, jnp.asarray(image_hwc, jnp.float32)))
