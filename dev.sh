#!/usr/bin/env bash
# One entry point for a fresh machine (Python 3.11 with venv; g++ only for the LAMMPS pair_style plugin
# tests, which are skipped without it):
#   ./dev.sh demo    set up (once) and run the main job: a committee MD demo on alanine dipeptide
#   ./dev.sh test    set up (once) and run the test suite (fast tests; slow ones with ./dev.sh test-all)
#   ./dev.sh setup   only create/refresh the virtual environment in .venv
#   ./dev.sh loop    set up and run the active-learning loop (advmd loop; alanine dipeptide defaults)
#   ./dev.sh bench   set up and run the performance suite (advmd bench: ratios, peak memory)
# Setup is idempotent: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3.11}
VENV=.venv
STAMP=$VENV/.setup-stamp

setup() {
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        echo "dev.sh: $PYTHON not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
        exit 1
    fi
    local want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/advmd" ]; then
        return 0
    fi
    echo "dev.sh: setting up $VENV (torch 2.9 CUDA-12 build, OpenMM, openmm-torch; several GB on first run)" >&2
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".[test]"
    echo "$want" > "$STAMP"
}

cmd=${1:-help}
shift || true
case "$cmd" in
    setup) setup ;;
    demo) setup; exec "$VENV/bin/advmd" demo "$@" ;;
    test) setup; exec "$VENV/bin/python" -m pytest -q -m "not slow" "$@" ;;
    test-all) setup; exec "$VENV/bin/python" -m pytest -q "$@" ;;
    loop) setup; exec "$VENV/bin/advmd" loop "$@" ;;
    bench) setup; exec "$VENV/bin/advmd" bench "$@" ;;
    *) sed -n '2,8p' "$0"; exit 2 ;;
esac
