#!/usr/bin/env bash
# GPU benchmark (experiments/gpu/README.md): one H100/H200, under 8 minutes.
#   bash experiments/gpu/run.sh              # writes experiments/gpu/results.{json,md}
#   bash experiments/gpu/run.sh --dry_run    # on CPU: lowers every path for cuda
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python}"
if [[ " $* " == *" --dry_run "* ]]; then
  export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
fi
exec timeout 480 "$PYTHON" experiments/gpu/bench.py "$@"
