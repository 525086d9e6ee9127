#!/usr/bin/env bash
# Create .venv at the repo root and install the project, its plugins and the test tools at the exact
# versions in requirements/lock.txt (a pip constraints file; regenerate it with `bash scripts/lock.sh`).
# Idempotent: a second run with unchanged inputs (dependency files, lock, settings below) only checks a stamp.
#
# Environment:
#   PYTHON                 interpreter to build the venv with (default: python3, must be >= 3.11)
#   TORCH_SPEC             torch requirement (default: torch==2.13.0; the lock pins its CPU build, 2.13.0+cpu)
#   TORCH_INDEX_URL        a PyTorch wheel index to take torch from, e.g. the CUDA index of your CUDA version.
#                          Setting TORCH_SPEC to anything else or TORCH_INDEX_URL at all leaves torch out of the
#                          lock (another build has another local version, e.g. 2.13.0+cu128); the rest stays locked.
#   MLP_RESEARCH_UNLOCKED  1: ignore the lock and resolve from the version ranges in the pyproject files
#   MLP_RESEARCH_VENV      where to build the environment (default: .venv; scripts/lock.sh points it at a temp dir)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
DEFAULT_TORCH_SPEC=torch==2.13.0
TORCH_SPEC=${TORCH_SPEC:-$DEFAULT_TORCH_SPEC}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
VENV=${MLP_RESEARCH_VENV:-.venv}
LOCK=requirements/lock.txt
STAMP=$VENV/.setup-stamp

# Which constraints every pip call gets: the lock, the lock without its torch line, or none.
case "${MLP_RESEARCH_UNLOCKED:-0}" in
  1) constraints=none ;;
  0 | "")
    if [ "$TORCH_SPEC" != "$DEFAULT_TORCH_SPEC" ] || [ -n "$TORCH_INDEX_URL" ]; then
      constraints=lock-without-torch
    else
      constraints=lock
    fi ;;
  *) echo "error: MLP_RESEARCH_UNLOCKED must be 0 or 1, not '$MLP_RESEARCH_UNLOCKED'" >&2; exit 2 ;;
esac
if [ "$constraints" != none ] && [ ! -f "$LOCK" ]; then
  echo "error: $LOCK is missing; regenerate it with 'bash scripts/lock.sh' or set MLP_RESEARCH_UNLOCKED=1" >&2
  exit 2
fi

shopt -s nullglob
inputs=(pyproject.toml scripts/setup.sh plugins/*/pyproject.toml plugins/*/requirements-nodeps.txt)
lock_sha=none
[ "$constraints" = none ] || lock_sha=$(sha256sum "$LOCK" | cut -d' ' -f1)
want=$(printf '%s\n' \
  "inputs_sha256=$(cat "${inputs[@]}" | sha256sum | cut -d' ' -f1)" \
  "lock_sha256=$lock_sha" \
  "constraints=$constraints" \
  "torch_spec=$TORCH_SPEC" \
  "torch_index_url=$TORCH_INDEX_URL")
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: $PYTHON is older than Python 3.11; set PYTHON=python3.11 (or newer)" >&2
  exit 2
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
rm -f "$STAMP"  # an interrupted install must not leave a stamp that matches

case "$constraints" in
  lock) constraint_args=(-c "$LOCK") ;;
  lock-without-torch)
    # Drop only the torch pin: its dependencies (sympy, networkx, ...) stay locked.
    grep -v -E '^torch==' "$LOCK" > "$VENV/.constraints-without-torch.txt"
    constraint_args=(-c "$VENV/.constraints-without-torch.txt") ;;
  none) constraint_args=() ;;
esac
INSTALL=("$VENV/bin/python" -m pip --disable-pip-version-check -q install ${constraint_args[@]+"${constraint_args[@]}"})
echo "setup: installing into $VENV (constraints: $constraints; first time takes a few minutes)" >&2
"${INSTALL[@]}" --upgrade pip
# From here on the (locked) pip takes the constraints for the isolated environments that build the project's own
# editable packages too (their setuptools); pip learnt --build-constraint in 25.3, the lock has 26.3.
[ "$constraints" = none ] || INSTALL+=(--build-constraint "${constraint_args[1]}")
# torch first: installed later as someone's dependency, an unpinned torch would pull a multi-GB CUDA build.
# The build alone (--no-deps), from TORCH_INDEX_URL when set, then its dependencies from the usual index under
# the constraints: a PyTorch wheel index need not carry the locked versions of sympy, networkx, ...
torch_args=(--no-deps "$TORCH_SPEC")
[ -z "$TORCH_INDEX_URL" ] || torch_args+=(--index-url "$TORCH_INDEX_URL")
if ! "${INSTALL[@]}" "${torch_args[@]}"; then
  if [ "$constraints" = lock ]; then
    echo "error: could not install $(grep -E '^torch==' "$LOCK" || echo torch), the build $LOCK pins, from your" \
      "package indexes; set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" \
      "(see README, Installing on a GPU machine)" >&2
  else
    echo "error: could not install $TORCH_SPEC${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}" >&2
  fi
  exit 1
fi
"${INSTALL[@]}" "$TORCH_SPEC"
"${INSTALL[@]}" -e ".[tfds,notebook,test]"
for plugin in plugins/*/; do
  [ -f "$plugin/pyproject.toml" ] || continue
  # Framework packages whose declared requirements conflict with the core (mxnet: numpy<2) are
  # listed in requirements-nodeps.txt and installed without their dependencies.
  if [ -f "$plugin/requirements-nodeps.txt" ]; then
    "${INSTALL[@]}" --no-deps -r "$plugin/requirements-nodeps.txt"
  fi
  "${INSTALL[@]}" -e "$plugin"
done
versions=$("$VENV/bin/python" -c 'import flax, jax, optax, torch
print(" ".join(f"{m.__name__} {m.__version__}" for m in (jax, flax, optax, torch)))')
printf '%s\n' "$want" > "$STAMP"
echo "setup: done ($versions)" >&2
