#!/usr/bin/env bash
# Create benchmarks/book/.venv, the environment that runs the book's own code: d2l 1.0.3 (installed with
# --no-deps: it pins numpy 1.23, matplotlib 3.7, ... which do not build here; its chapter code runs on these)
# beside the exact jax/flax/optax/TensorFlow/torch versions of requirements.txt (those of the project's lock,
# plus pandas, IPython and matplotlib-inline, which d2l imports). torchvision is not installed: no build
# matches torch 2.13.0+cpu, so benchmarks/book/torchvision_standin.py stands in for it.
# Idempotent: a second run with unchanged inputs only checks a stamp.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.setup-stamp
want=$(cat requirements.txt setup.sh | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
rm -f "$STAMP"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q install)
echo "book setup: installing into benchmarks/book/$VENV (a few minutes)" >&2
# torch alone first, pinned to the CPU build: as someone's dependency an unpinned torch pulls a CUDA build.
"${PIP[@]}" --no-deps -c requirements.txt torch==2.13.0
"${PIP[@]}" -r requirements.txt
"${PIP[@]}" --no-deps d2l==1.0.3
"$VENV/bin/python" -c 'import d2l, jax, flax, optax, tensorflow, torch' 2>/dev/null
echo "$want" > "$STAMP"
echo "book setup: done" >&2
