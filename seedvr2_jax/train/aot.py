"""Ahead-of-time compilation of a run's training step for devices this host does not have, as
MaxText's `train_compile.py` does: a TPU pod slice named by its topology (`v5p:4x4x4`,
`v6e:16x16`; compile-only devices of the `libtpu` package, `pip install -e '.[tpu]'`), or `cpu:N`
(N host CPU devices, no libtpu). The run is built abstractly (`loop.build(..., abstract=True)`:
shapes with shardings, no parameter allocated), its step lowered and compiled for those devices,
and the compiled program read back: memory per chip, FLOPs, collectives.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seedvr2_jax.errors import ConfigError, SeedVR2Error
from seedvr2_jax.parallel import sharding
from seedvr2_jax.train import loop, start


@dataclasses.dataclass(frozen=True)
class Chip:
  """Per-chip HBM bytes and dense bf16 peak (Cloud TPU documentation, each version's page)."""

  hbm_bytes: float
  peak_tflops: float


CHIPS = {"v4": Chip(32e9, 275.0), "v5e": Chip(16e9, 197.0), "v5p": Chip(95e9, 459.0),
         "v6e": Chip(32e9, 918.0)}
# libtpu's device kind for each version (a v4 or v5p chip is one "megacore" device).
_KINDS = {"v4": "TPU v4", "v5e": "TPU v5 lite", "v5p": "TPU v5", "v6e": "TPU v6 lite"}
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")


class CompileError(SeedVR2Error):
  """The step does not compile for the target (e.g. it does not fit the chip's memory)."""


@dataclasses.dataclass(frozen=True)
class Target:
  """The devices to compile for: `name` as given, the chip (None for CPU) and the devices."""

  name: str
  chip: Chip | None
  devices: tuple
  slices: int

  @property
  def hosts(self) -> int:
    return len({d.process_index for d in self.devices})


def target(name: str, slices: int = 1) -> Target:
  """`VERSION:AxBxC` (a TPU slice of `slices` slices; needs libtpu) or `cpu:N`."""
  version, _, shape = name.partition(":")
  if version == "cpu":
    count = int(shape) if shape.isdigit() else 0
    devices = jax.devices("cpu")
    if slices != 1 or count < 1 or count > len(devices):
      raise ConfigError(f"--topology {name}: this process has {len(devices)} CPU devices (set "
                        f"jax_num_cpu_devices before jax starts) and one slice")
    return Target(name, None, tuple(devices[:count]), 1)
  if version not in CHIPS or not re.fullmatch(r"\d+(x\d+){1,2}", shape):
    raise ConfigError(f"--topology {name!r}: expected VERSION:AxB[xC] with VERSION one of "
                      f"{tuple(CHIPS)} (e.g. v5p:4x4x4, v6e:16x16), or cpu:N")
    # (a bad shape for a real version is libtpu's error below)
  try:
    from jax.experimental import topologies
    extra = {"chip_config_name": "megacore"} if version == "v4" else {}
    desc = topologies.get_topology_desc(name, "tpu", num_slices=slices, **extra)
  except (ImportError, RuntimeError, ValueError) as e:
    raise ConfigError(f"--topology {name}: no compile-only TPU devices ({str(e).splitlines()[0]};"
                      f" install the tpu extra: pip install -e '.[tpu]')") from None
  devices = tuple(desc.devices)
  if devices[0].device_kind != _KINDS[version]:
    raise ConfigError(f"--topology {name}: libtpu made {devices[0].device_kind} devices")
  return Target(name, CHIPS[version], devices, slices)


def batch_shapes(config: ml_collections.ConfigDict, clip: Sequence[int] | None, mesh
                 ) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch of one step for a clip (frames, height, width) of pixels, default the
  config's largest bucket: uint8 HQ and LQ clips, or posterior moments (B, T', h, w, 2C) when
  `config.data.latents` is set; sharded over the batch axes as the data pipeline places it."""
  frames, height, width = clip or max(config.data.buckets, key=lambda b: math.prod(b))
  spec = jax.sharding.NamedSharding(mesh, sharding.batch_spec(1))
  b = config.batch_size
  if config.data.latents:
    vae = start.vae_config_of(config)
    thw = (vae.latent_frames(frames), height // vae.spatial_factor, width // vae.spatial_factor)
    moments = jax.ShapeDtypeStruct((b, *thw, 2 * vae.latent_channels), jnp.float32,
                                   sharding=spec)
    return {"hq_moments": moments, "lq_moments": moments}
  scale = config.data.scale
  return {"hq": jax.ShapeDtypeStruct((b, frames, height, width, 3), jnp.uint8, sharding=spec),
          "lq": jax.ShapeDtypeStruct((b, frames, height // scale, width // scale, 3), jnp.uint8,
                                     sharding=spec)}


_SHAPE = re.compile(r"\b(pred|[suf]\d+|bf16|f8\w*|c64|c128)\[([\d,]*)\]")
_BYTES = {"pred": 1, "bf16": 2}


def _shape_bytes(text: str) -> int:
  """Bytes of every array shape in an HLO result type, e.g. `(bf16[8,128]{1,0}, f32[4])`."""
  total = 0
  for dtype, dims in _SHAPE.findall(text):
    size = _BYTES.get(dtype) or max(int(re.sub(r"\D", "", dtype) or 8) // 8, 1)
    total += size * math.prod(int(d) for d in dims.split(",") if d)
  return total


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
  """{kind: {"count", "bytes"}} of the collectives in an optimised HLO module's text (async
  pairs counted once, at their start): static counts, so an op inside a loop body (scanned
  blocks, accumulation) counts once however many iterations run; bytes are its result's per
  device."""
  out = {kind: {"count": 0, "bytes": 0} for kind in COLLECTIVES}
  pattern = re.compile(r"=\s*(.*?)\s(" + "|".join(COLLECTIVES) + r")(-start)?\(")
  for line in hlo_text.splitlines():
    match = pattern.search(line)
    if match:
      result, kind, start = match.groups()
      out[kind]["count"] += 1
      # An async start's result holds its operands and outputs: count the outputs only.
      shapes = _SHAPE.findall(result)
      out[kind]["bytes"] += _shape_bytes(" ".join(
          f"{d}[{s}]" for d, s in (shapes[len(shapes) // 2:] if start else shapes)))
  return out


@dataclasses.dataclass
class Report:
  """What one compile gives: per-chip memory (bytes), FLOPs, collectives, compile time."""

  target: str
  slices: int
  chips: int
  hosts: int
  mesh: dict
  objective: str
  phase: str
  batch: dict
  compile_s: float
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  hbm_bytes: float | None
  model_flops_per_chip: float
  xla_flops_per_chip: float | None
  collectives: dict
  peak_tflops: float | None

  @property
  def total_bytes(self) -> int:
    """Arguments + temporaries + outputs not aliased to (donated) arguments."""
    return self.argument_bytes + self.temp_bytes + self.output_bytes - self.alias_bytes

  def step_s(self, mfu: float) -> float | None:
    """Expected step time at `mfu` of the chip's peak from the model FLOPs."""
    if not self.peak_tflops:
      return None
    return self.model_flops_per_chip / (mfu * self.peak_tflops * 1e12)

  def lines(self, mfu: float) -> list[str]:
    gb = lambda n: f"{n / 1e9:.3g} GB"
    hbm = (f" of {gb(self.hbm_bytes)} HBM ({100 * self.total_bytes / self.hbm_bytes:.0f}%)"
           if self.hbm_bytes else "")
    shapes = ", ".join(f"{k} {tuple(v)}" for k, v in self.batch.items())
    slices = f" x {self.slices} slices" if self.slices > 1 else ""
    out = [f"target {self.target}{slices}: {self.chips} chips, {self.hosts} hosts; mesh "
           + " ".join(f"{k}={v}" for k, v in self.mesh.items()),
           f"step {self.objective} (phase {self.phase}); batch {shapes}; compiled in "
           f"{self.compile_s:.0f} s",
           f"memory per chip: arguments {gb(self.argument_bytes)}, outputs "
           f"{gb(self.output_bytes)} (aliased {gb(self.alias_bytes)}), temporaries "
           f"{gb(self.temp_bytes)}, total {gb(self.total_bytes)}{hbm}",
           f"flops per chip: model {self.model_flops_per_chip:.4g}" + (
               f", XLA {self.xla_flops_per_chip:.4g}" if self.xla_flops_per_chip else "")]
    step = self.step_s(mfu)
    if step is not None:
      out.append(f"step time at {100 * mfu:.0f}% MFU of {self.peak_tflops:.0f} TFLOP/s: "
                 f"{step:.2f} s")
    out.append("collectives (static count, bytes per chip): " + ", ".join(
        f"{k} {v['count']} ({gb(v['bytes'])})" for k, v in self.collectives.items()))
    return out


def compile_step(config: ml_collections.ConfigDict, tgt: Target, *,
                 clip: Sequence[int] | None = None, step: int = 0):
  """(Report, compiled) of `config`'s training step at step `step` (its phase) for `tgt`."""
  if tgt.slices != math.prod(int(v) for v in config.dcn_mesh.values()):
    raise ConfigError(f"{tgt.slices} slices need dcn_mesh sizes whose product is {tgt.slices}; "
                      f"got {dict(config.dcn_mesh)}")
  run = loop.build(config, list(tgt.devices), abstract=True)
  batch = batch_shapes(config, clip, run.mesh)
  phase = run.objective.phase(step)
  began = time.perf_counter()
  try:
    compiled = loop.make_step_fn(run, phase).lower(run.state, batch, run.frozen).compile()
  except jax.errors.JaxRuntimeError as e:
    raise CompileError(f"{tgt.name}: {str(e).splitlines()[0]}") from None
  seconds = time.perf_counter() - began
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  chips = len(tgt.devices)
  report = Report(
      target=tgt.name, slices=tgt.slices, chips=chips, hosts=tgt.hosts, mesh=dict(run.mesh.shape),
      objective=config.objective, phase=str(phase),
      batch={k: v.shape for k, v in batch.items()}, compile_s=seconds,
      argument_bytes=int(memory.argument_size_in_bytes),
      output_bytes=int(memory.output_size_in_bytes),
      alias_bytes=int(memory.alias_size_in_bytes), temp_bytes=int(memory.temp_size_in_bytes),
      hbm_bytes=tgt.chip.hbm_bytes if tgt.chip else None,
      model_flops_per_chip=run.objective.throughput(batch, phase).flops / chips,
      xla_flops_per_chip=float(cost.get("flops", 0.0)) or None if cost else None,
      collectives=collectives(compiled.as_text()),
      peak_tflops=tgt.chip.peak_tflops if tgt.chip else None)
  return report, compiled
