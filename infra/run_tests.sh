#!/usr/bin/env bash
# The test suite: install, lint, then pytest. Tests start the real services they need
# (moto S3, MLflow server, Ray) unless DIFFCXR_TEST_S3_ENDPOINT / DIFFCXR_TEST_MLFLOW_URI
# point at running ones (as .ci/run does).
#
# pytest runs in two passes. Most tests wait as much as they compute (Ray and Serve start-up, polls,
# servers), so they share the machine. Pass 1: the tests that use Ray, on DIFFCXR_TEST_WORKERS (2)
# pytest-xdist workers, a whole module per worker at a time and the longest modules first
# (tests/conftest.py), so a module's Ray cluster and fixtures stay in one process. Pass 2: the
# `exclusive` tests, which start a `ray start` head on its fixed ports and end with `ray stop` (every Ray
# process on the machine), one after another in a session of their own, while a second session runs the
# `no_ray` tests (the phantom learnability CNN, the labeler, manifests, ...) beside them; its output
# follows theirs. Extra arguments go to every session; a session that selects no test is not a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/bootstrap.sh
.venv/bin/ruff check .

workers=${DIFFCXR_TEST_WORKERS:-2}
beside_log=$(mktemp)
trap 'rm -f "$beside_log"' EXIT
set +e
.venv/bin/python -m pytest -n "$workers" --dist loadfile -m "not exclusive and not no_ray" "$@"
ray_rc=$?
.venv/bin/python -m pytest -p no:cacheprovider -m no_ray "$@" > "$beside_log" 2>&1 &
beside=$!
.venv/bin/python -m pytest -m exclusive "$@"
exclusive_rc=$?
wait "$beside"
no_ray_rc=$?
echo "---------------- the no_ray tests, run beside the exclusive ones ----------------"
cat "$beside_log"
set -e
echo "run_tests: exit codes: tests that use Ray ${ray_rc}, exclusive ${exclusive_rc}, no_ray ${no_ray_rc}"
# 0 passed, 5 selected nothing: the suite fails if any session failed, or if none ran a test
ran=0
for rc in "$ray_rc" "$exclusive_rc" "$no_ray_rc"; do
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then exit "$rc"; fi
  if [ "$rc" -eq 0 ]; then ran=1; fi
done
[ "$ran" -eq 1 ] || exit 5
