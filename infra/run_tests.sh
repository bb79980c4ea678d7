#!/usr/bin/env bash
# The test suite: install, lint, then pytest. Tests start the real services they need
# (moto S3, MLflow server, Ray) unless DIFFCXR_TEST_S3_ENDPOINT / DIFFCXR_TEST_MLFLOW_URI
# point at running ones (as .ci/run does).
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/bootstrap.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
