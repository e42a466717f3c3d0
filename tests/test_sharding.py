"""Logical sharding of activations (parallel/sharding.py: rules, `constrain`,
`activation_sharding`): what the DiT and the discriminator ask the compiler for on a data x
sequence x tensor mesh, and nothing without a mesh."""

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec

from seedvr2_jax import config_lib
from seedvr2_jax.models.dit import config as dit_config
from seedvr2_jax.models.dit.nadit import NaDiT
from seedvr2_jax.parallel import mesh as mesh_lib
from seedvr2_jax.parallel import sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lowers the tiny DiT's and discriminator's forwards on an 8-CPU-device mesh (argv[1]: sizes)
# under the default rules and prints the distinct sharding constraints (shape and axes).
LOWER = """
import sys, re, jax
jax.config.update("jax_num_cpu_devices", 8)
import jax.numpy as jnp
from flax import nnx
from seedvr2_jax import config_lib
from seedvr2_jax.models.dit import config as dit_config
from seedvr2_jax.models.dit.nadit import NaDiT
from seedvr2_jax.models.discriminator import Discriminator
from seedvr2_jax.parallel import mesh as mesh_lib, sharding
cfg = dit_config.from_config_dict(config_lib.load_config("configs/seedvr2_3b.py:tiny").model)
mesh = mesh_lib.make_mesh(eval(sys.argv[1]))
disc = nnx.eval_shape(lambda: Discriminator(NaDiT(cfg, nnx.Rngs(0)), rngs=nnx.Rngs(1)))
graphdef, state = nnx.split(disc)
def score(state, x, cond, txt, t):
  with sharding.activation_sharding(mesh):
    model = nnx.merge(graphdef, state)
    return model(x, cond, txt, t), model.trunk(jnp.concatenate([x, cond], -1), txt, t)
sds = jax.ShapeDtypeStruct
args = (sds((2, 2, 8, 8, 16), jnp.float32), sds((2, 2, 8, 8, 17), jnp.float32),
        sds((2, 4, cfg.txt_in_dim), jnp.float32), sds((2,), jnp.float32))
text = jax.jit(score).lower(state, *args).as_text()
found = set()
for line in text.splitlines():
  m = re.search(r"sdy.sharding_constraint \\S+ <@mesh, (\\[.*\\])> : tensor<([\\dx]+)x\\w+>", line)
  if m:
    found.add(m.group(2) + " " + m.group(1))
print("\\n".join(sorted(found)))
"""


def _constraints(sizes: dict) -> set[str]:
  proc = subprocess.run([sys.executable, "-c", LOWER, repr(sizes)], capture_output=True,
                        text=True, timeout=300, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr
  return set(proc.stdout.splitlines())


def test_rules_split_over_several_axes_and_drop_what_does_not_divide():
  fake = type("FakeMesh", (), {"shape": {"data": 2, "fsdp": 4, "sequence": 2, "tensor": 2}})()
  rules = dict(sharding.DEFAULT_RULES)
  spec = lambda names, shape: sharding.mesh_spec(PartitionSpec(*names), shape, rules, fake)
  assert spec(("act_batch", "act_tokens", "act_embed"), (8, 64, 32)) == \
      PartitionSpec(("data", "fsdp"), "sequence", None)
  assert spec(("act_batch",), (2,)) == PartitionSpec("data")  # fsdp=4 does not divide 2
  assert spec(("act_windows", None, "act_heads"), (8 * 9, 64, 6)) == \
      PartitionSpec(("data", "fsdp"), None, "tensor")  # 72 windows: not 16-way
  assert spec(("act_windows",), (8 * 16,)) == PartitionSpec(("data", "fsdp", "sequence"))


def test_dit_and_discriminator_constrain_streams_heads_mlp_and_windows():
  found = _constraints({"data": 2, "sequence": 2, "tensor": 2})
  expected = {
      # residual streams: samples over data, video tokens over sequence, width replicated
      '2x32x64 [{"data"}, {"sequence"}, {}]', '2x4x64 [{"data"}, {?}, {}]',
      # q/k/v (B, S, 3, H, d) and the attention output (B, N, H, d): heads over tensor
      '2x32x3x2x32 [{"data"}, {"sequence"}, {?}, {"tensor"}, {?}]',
      '2x4x3x2x32 [{"data"}, {?}, {?}, {"tensor"}, {?}]',
      '2x32x2x32 [{"data"}, {"sequence"}, {"tensor"}, {?}]',
      # windows x samples (2 x 2 windows) over data and sequence, heads over tensor
      '4x64x2x32 [{"data", "sequence"}, {?}, {"tensor"}, {?}]',
      # MLP hidden over tensor (video, text, the discriminator heads' token)
      '2x32x256 [{"data"}, {?}, {"tensor"}]', '2x4x256 [{"data"}, {?}, {"tensor"}]',
      '2x256 [{"data"}, {"tensor"}]',
      # discriminator heads: keys/values, the pooled token
      '2x32x2x2x32 [{"data"}, {"sequence"}, {?}, {"tensor"}, {?}]', '2x64 [{"data"}, {}]'}
  assert found == expected, sorted(found)
  # Data x FSDP: samples split (2 samples: over data alone), nothing else; the width of the
  # activations is never split over fsdp (FSDP gathers weights, not activations).
  found = _constraints({"data": 2, "fsdp": 4})
  assert len(found) == len(expected)
  assert all(re.fullmatch(r'\S+ \[\{"data"\}(, \{\??\})*\]', c) for c in found), found


def test_no_constraints_without_a_mesh_or_on_one_device():
  cfg = dit_config.from_config_dict(config_lib.load_config(
      os.path.join(ROOT, "configs", "seedvr2_3b.py:tiny")).model)
  graphdef, state = nnx.split(nnx.eval_shape(lambda: NaDiT(cfg, nnx.Rngs(0))))
  args = (jax.ShapeDtypeStruct((1, 2, 8, 8, cfg.vid_in_channels), jnp.float32),
          jax.ShapeDtypeStruct((1, 4, cfg.txt_in_dim), jnp.float32),
          jax.ShapeDtypeStruct((1,), jnp.float32))
  one = mesh_lib.make_mesh({"data": 1}, None, jax.devices()[:1])
  for context in (None, one):
    def forward(state, *args):
      if context is None:
        return nnx.merge(graphdef, state)(*args)
      with sharding.activation_sharding(context):
        return nnx.merge(graphdef, state)(*args)
    text = jax.jit(forward).lower(state, *args).as_text()
    assert not re.search(r"sharding_constraint|@Sharding", text)
