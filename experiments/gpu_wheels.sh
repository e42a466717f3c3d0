#!/usr/bin/env bash
# Downloads, at the versions of requirements/lock.txt, the wheels an offline GPU image with
# Python 3.12, jax, numpy, orbax-checkpoint and torch lacks, into DEST (default .whl/, ignored by
# git), for `source experiments/gpu_env.sh` to install there.
#   bash experiments/gpu_wheels.sh [--with-av] [DEST]
# PyAV (34 MB) is opt-in: the video benchmarks need it, the model benchmarks do not.
set -euo pipefail
cd "$(dirname "$0")/.."
with_av=0
if [[ ${1:-} == --with-av ]]; then with_av=1; shift; fi
dest=${1:-.whl}
names=(grain array-record portpicker tensorflow-datasets dm-tree immutabledict simple-parsing
       docstring-parser tensorflow-metadata googleapis-common-protos termcolor toml
       importlib-resources ml-collections clu tensorboardx einops flax optax pytest pluggy
       iniconfig)
((with_av)) && names+=(av)
pins=()
for name in "${names[@]}"; do
  pin=$(grep -i "^${name}==" requirements/lock.txt) || { echo "$name is not in the lock" >&2; exit 1; }
  pins+=("$pin")
done
mkdir -p "$dest"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$dest" "${pins[@]}"
# promise has no wheel on the registry: build its pure-Python wheel here.
ls "$dest"/promise-*.whl >/dev/null 2>&1 || python3 -m pip wheel -q --no-deps \
  "$(grep -i '^promise==' requirements/lock.txt)" -w "$dest"
du -sh "$dest"
