#!/usr/bin/env bash
# Development services on this machine, all bound to 127.0.0.1: moto (S3), an MLflow server (sqlite backend)
# and a Ray head (dashboard :8265) whose jobs already point at both. They stay up until
# `bash infra/stop_local.sh`, so you can submit jobs against them the way you would against a cluster
# (docs/DEPLOY.md). For a one-shot run that cleans up after itself use `bash infra/run_local.sh` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
state=var/services
if [ -f "$state/services.json" ]; then
  # a second `up` would overwrite the record of the first and leave its processes unstoppable
  echo "start_local: services already recorded in $state/services.json; run 'bash infra/stop_local.sh' first" >&2
  exit 1
fi
bash infra/bootstrap.sh
.venv/bin/python -m infra.local up --moto --mlflow --ray --shell-env --state "$state" --mlflow-state var/mlflow-server
cat <<MSG

Services are up. In your shell:
  source $state/services.env
  .venv/bin/ray job submit --working-dir . -- python orchestration/full_pipeline.py
Stop them with: bash infra/stop_local.sh
MSG
