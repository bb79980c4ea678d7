#!/usr/bin/env bash
# Stop what infra/start_local.sh started (the pids and the Ray head recorded in var/services).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m infra.local down --state var/services
# its exports point at servers that are gone now; sourcing it again would only mislead
rm -f var/services/services.env
echo "stop_local: stopped"
