"""SeedVR2-7B training on a pod: the recipe and launch commands of configs/train_3b.py with the
model of `seedvr2_7b.py` (36 blocks, 8.2B parameters). Launch (one process per 8-GPU host, SLURM):

  srun --nodes=9 --ntasks-per-node=1 seedvr2-jax train --distributed \
      --config configs/train_7b.py[:distill] --workdir /shared/ckpt/run7b \
      --config.init.checkpoint=/ckpt/seedvr2_7b --config.data.sources=/data/videos \
      --config.dcn_mesh.data=9

one host: the same without srun and --distributed; TPU pod: as train_3b.py with this file.
Memory: the state is 16 bytes per parameter (fp32 weights, gradients, two AdamW moments). The
blocks run under lax.scan (model.scan_layers), so FSDP gathers one block pair's weights at a time
(docs/benchmarks.md).
"""

import os

import ml_collections

from seedvr2_jax.config_lib import config_module, load_config

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  train_3b = config_module(os.path.join(HERE, "train_3b.py"))
  c = train_3b.recipe(load_config(os.path.join(HERE, "seedvr2_7b.py")).model, arg)
  c.model.scan_layers = True
  return c
