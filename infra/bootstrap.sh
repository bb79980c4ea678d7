#!/usr/bin/env bash
# Create .venv (Python 3.11) and install Diff-CXR with its pinned dependencies, plus the system tools the
# serving tests drive: Chromium + ChromeDriver (web page in a headless browser) and DCMTK (an independent
# DICOM reader), and kubectl (its built-in kustomize renders infra/k8s in the manifest tests).
# Idempotent: about 150 s (+ ~90 s of apt) on a fresh machine; under a second when pyproject.toml, setup.py
# and the .proto are unchanged since the last install into this checkout's .venv (a digest in .venv/.diffcxr-install).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
# what an install depends on: the dependency pins, the build hook, and the proto it compiles to stubs
install_digest() { cat pyproject.toml setup.py services/serve/generator.proto | sha256sum | cut -d' ' -f1; }
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  # First install: pip byte-compiles one file at a time (half of a 186-s install on 2 cores); compileall on
  # every core does the same in 52 s. Lazy compiling is no substitute: PYTHONDONTWRITEBYTECODE (common in
  # containers) would make every process compile its imports again. A few vendored non-Python-3 files fail
  # to compile, as they do under pip, hence `|| true`.
  .venv/bin/python -m pip install -q --no-compile -e '.[test]'
  .venv/bin/python -m compileall -q -j 0 .venv/lib/python*/site-packages >/dev/null 2>&1 || true
elif [ "$(cat .venv/.diffcxr-install 2>/dev/null)" != "$(install_digest)" ] \
  || ! .venv/bin/python -c "import diffcxr, sys; sys.exit(not diffcxr.__file__.startswith('$PWD/'))" 2>/dev/null; then
  # pip re-checks every pinned dependency and rebuilds the editable wheel: ~7 s, wasted when nothing changed
  .venv/bin/python -m pip install -q -e '.[test]'
fi
install_digest > .venv/.diffcxr-install

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v dcm2pnm >/dev/null 2>&1 || missing+=(dcmtk)
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)  # `kubectl kustomize` of infra/k8s in the tests
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing ${missing[*]} (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
  else
    echo "bootstrap: the tests need ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
  fi
fi
