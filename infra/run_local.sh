#!/usr/bin/env bash
# The embedded default: install, start a local Ray head and MLflow server, submit the
# full pipeline (tiny profile) as a Ray job, stop everything it started. Extra arguments
# go to infra/launch.py (e.g. --profile small, --set data.max_reports=100, --keep-services).
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/bootstrap.sh
exec .venv/bin/python -m infra.launch "$@"
