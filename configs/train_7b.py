"""SeedVR2-7B training on a pod: the recipe and launch commands of configs/train_3b.py with the
7B model (36 blocks, 8.2B parameters). Launch (one process per 8-GPU host, SLURM):

  srun --nodes=9 --ntasks-per-node=1 seedvr2-jax train --distributed \
      --config configs/train_7b.py[:distill] --workdir /shared/ckpt/run7b \
      --config.init.checkpoint=/ckpt/seedvr2_7b --config.data.sources=/data/videos \
      --config.dcn_mesh={"data": 9}

one host: the same without srun and --distributed; TPU pod: as train_3b.py with this file.
Memory: state is 16 bytes per parameter (fp32 weights, gradients, two AdamW moments), 132 GB in
all. The blocks run under lax.scan (model.scan_layers), so FSDP gathers one block pair's weights
at a time: at 720p x 21 the step fits FSDP over 2 H200s (90 GB peak per GPU; without the scan
139 GB does not fit; docs/benchmarks.md).
"""

from seedvr2_jax.train.config import pod_config


def get_config(arg: str | None = None):
  c = pod_config("7b", arg)
  c.model.scan_layers = True
  return c
