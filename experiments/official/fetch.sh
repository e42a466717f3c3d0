#!/usr/bin/env bash
# Checks out the official SeedVR code (ByteDance-Seed/SeedVR) at the pinned commit into
# experiments/official/SeedVR (git-ignored), for experiments/bench_official.py.
#   bash experiments/official/fetch.sh                 # clone from GitHub
#   bash experiments/official/fetch.sh /path/to/git    # clone from a local clone or bare mirror
# Run it where the source is reachable, then carry the folder to an offline GPU machine.
set -euo pipefail
COMMIT=673b56374c2adb21b7628b90df3829d457a52bbb
source=${1:-https://github.com/ByteDance-Seed/SeedVR.git}
dest="$(cd "$(dirname "$0")" && pwd)/SeedVR"
if [[ ! -d $dest/.git ]]; then
  tmp="$dest.partial"
  rm -rf "$tmp"
  git clone -q --no-checkout "$source" "$tmp"
  mv "$tmp" "$dest"
fi
git -C "$dest" checkout -q --detach "$COMMIT"
echo "$dest at $(git -C "$dest" rev-parse HEAD) ($(du -sh "$dest" | cut -f1))"
