#!/usr/bin/env bash
# Regenerates requirements/lock.txt: every package the project installs (all extras, transitive
# dependencies included) at one exact version, for CPython 3.12 on Linux x86-64, resolved from
# setup.py's ranges under requirements/pins.txt. Needs uv (`pip install uv==0.13.9`). glibc 2.31 or
# newer (manylinux_2_31): libtpu (the `tpu` extra) ships wheels for no older one.
#   bash requirements/compile.sh                          # add/remove what setup.py changed
#   bash requirements/compile.sh --upgrade-package numpy  # move one package deliberately
#   bash requirements/compile.sh --upgrade                # move everything (then run the suite)
set -euo pipefail
cd "$(dirname "$0")/.."
uv pip compile setup.py --all-extras --constraint requirements/pins.txt \
  --python-version 3.12 --python-platform x86_64-manylinux_2_31 \
  --custom-compile-command "bash requirements/compile.sh" -o requirements/lock.txt "$@"
