#!/usr/bin/env bash
# Create .venv at the repo root and install the project, its plugins and the test tools.
# Idempotent: a second run with unchanged dependency files only checks a stamp.
#
# Environment:
#   PYTHON           interpreter to build the venv with (default: python3, must be >= 3.11)
#   TORCH_SPEC       torch requirement (default: torch==2.13.0, the CPU build this project is tested with)
#   TORCH_INDEX_URL  a PyTorch wheel index to take torch from, e.g. the CUDA index of your CUDA version
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
VENV=.venv
STAMP=$VENV/.setup-stamp

shopt -s nullglob
deps=(pyproject.toml scripts/setup.sh plugins/*/pyproject.toml plugins/*/requirements-nodeps.txt)
want=$(cat "${deps[@]}" | sha256sum | cut -d' ' -f1)
want="$want $TORCH_SPEC ${TORCH_INDEX_URL:-}"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: $PYTHON is older than Python 3.11; set PYTHON=python3.11 (or newer)" >&2
  exit 2
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
echo "setup: installing into $VENV (first time takes a few minutes)" >&2
"${PIP[@]}" install --upgrade pip
# torch first: installed later as someone's dependency, an unpinned torch would pull a multi-GB CUDA build.
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  "${PIP[@]}" install "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
else
  "${PIP[@]}" install "$TORCH_SPEC"
fi
"${PIP[@]}" install -e ".[tfds,test]"
for plugin in plugins/*/; do
  [ -f "$plugin/pyproject.toml" ] || continue
  # Framework packages whose declared requirements conflict with the core (mxnet: numpy<2) are
  # listed in requirements-nodeps.txt and installed without their dependencies.
  if [ -f "$plugin/requirements-nodeps.txt" ]; then
    "${PIP[@]}" install --no-deps -r "$plugin/requirements-nodeps.txt"
  fi
  "${PIP[@]}" install -e "$plugin"
done
echo "$want" > "$STAMP"
echo "setup: done ($("$VENV/bin/python" -c 'import jax, flax, optax; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__)'))" >&2
