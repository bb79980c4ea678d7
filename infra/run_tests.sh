#!/usr/bin/env bash
# The test suite: install, lint, then pytest. Tests start the real services they need
# (moto S3, MLflow server, Ray) unless DIFFCXR_TEST_S3_ENDPOINT / DIFFCXR_TEST_MLFLOW_URI
# point at running ones (as .ci/run does).
#
# pytest runs in two passes. Most tests wait more than they compute (Ray and Serve start-up, polls,
# servers), so the first pass runs every test not marked `exclusive` on DIFFCXR_TEST_WORKERS (2)
# pytest-xdist workers, a whole module per worker at a time: a module's Ray cluster and fixtures stay
# in one process, and each worker starts its own local Ray cluster. The second pass runs the
# `exclusive` tests one by one with nothing beside them: they start a `ray start` head on its fixed
# ports and end with `ray stop`, which stops every Ray process on the machine. Extra arguments go
# to both passes; a pass that selects no test is not a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/bootstrap.sh
.venv/bin/ruff check .

workers=${DIFFCXR_TEST_WORKERS:-2}
set +e
.venv/bin/python -m pytest -n "$workers" --dist loadfile -m "not exclusive" "$@"
shared=$?
.venv/bin/python -m pytest -m exclusive "$@"
alone=$?
set -e
echo "run_tests: pass 1 (${workers} workers, not exclusive) exit ${shared}; pass 2 (exclusive, alone) exit ${alone}"
# 0 passed, 5 selected nothing: the suite fails if either pass failed, or if neither ran a test
for rc in "$shared" "$alone"; do
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then exit "$rc"; fi
done
if [ "$shared" -eq 5 ] && [ "$alone" -eq 5 ]; then exit 5; fi
exit 0
