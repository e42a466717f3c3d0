"""SeedVR2-3B training on a pod: flow-matching diffusion training (SeedVR) or progressive
distillation 64 -> 1 steps (SeedVR2 stage 1), with the paper's optimisation (AdamW lr 1e-6,
weight decay 0.01, bf16 compute on fp32 master weights, EMA 0.9998, rematerialised blocks).

Initialise from a converted official checkpoint (`seedvr2-jax convert ... --out CKPT`) with
--config.init.checkpoint=CKPT, or leave it empty to train from scratch. Data: folders of HQ
videos/images, degraded on the fly (--config.data.sources=DIR).

Single host (8 GPUs: FSDP inside the host):
  seedvr2-jax train --config configs/train_3b.py --workdir /ckpt/run1 \
      --config.init.checkpoint=/ckpt/seedvr2_3b --config.data.sources=/data/videos
  seedvr2-jax train --config configs/train_3b.py:distill --workdir /ckpt/distill1 ...
  seedvr2-jax train --config configs/train_3b.py:apt --workdir /ckpt/apt1 \
      --config.init.checkpoint=/ckpt/distill1_one_step ...   # images first, then clips

Multi-host GPU (SLURM: one process per host, 8 GPUs each; jax.distributed reads SLURM_*):
  srun --nodes=9 --ntasks-per-node=1 seedvr2-jax train --distributed \
      --config configs/train_3b.py --workdir /shared/ckpt/run1 --config.dcn_mesh={"data": 9} ...
  (mesh: fsdp=8 inside each node over NVLink, data=9 across nodes; 72 GPUs as the paper)

TPU pod slice (one process per host, same command on every host):
  gcloud compute tpus tpu-vm ssh POD --worker=all --command="seedvr2-jax train --distributed \
      --config configs/train_3b.py --workdir gs://bucket/run1 --config.mesh.fsdp=-1 ..."

Long clips: --config.mesh.sequence=2 (or 4) splits each clip's latent width over devices.
Memory for speed: --config.model.remat=dots keeps the linear layers' outputs (104 GB per GPU at
720p x 21: H200-class GPUs; 38% MFU instead of 33%, docs/benchmarks.md).
Latents: `seedvr2-jax precompute-latents DATA OUT --checkpoint CKPT --config configs/train_3b.py`
once, then --config.data.latents=OUT skips decoding, degrading and encoding (SeedVR: 4x faster).
"""

from seedvr2_jax.train.config import pod_config


def get_config(arg: str | None = None):
  return pod_config("3b", arg)
