#!/usr/bin/env bash
# GPU check for a lent GPU machine: calls benchmarks/gpu_check.py under a time limit (default 480 s).
# UNTESTED ON A GPU (checked only with --dry-run on CPU); see the docstring of gpu_check.py.
#
# Once, on the CPU machine (the device image has torch but not diffusers; this zips it, ~6 MB, git-ignored):
#   .venv/bin/python benchmarks/gpu_check.py --pack-deps
# On the device (one call, about 8 minutes at most; results in $OUT/gpu_check_<date>.json):
#   run(command="bash benchmarks/gpu_check.sh", carry=["build/gpu_deps"], timeout_s=560)
# Here, without a GPU (tiny sizes on CPU, writes /tmp/gpu_check_dryrun_<date>.json):
#   bash benchmarks/gpu_check.sh --dry-run
#
# Installs nothing: uses .venv when the checkout has one, else the machine's python3.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -f .venv/bin/activate ]]; then
    # shellcheck disable=SC1091
    source .venv/bin/activate
fi
export PYTHONUNBUFFERED=1
# SIGINT first so Python unwinds (every finished measurement is already on disk), SIGKILL 20 s later.
exec timeout --signal=INT --kill-after=20 "${GPU_CHECK_TIMEOUT:-480}" python3 benchmarks/gpu_check.py "$@"
