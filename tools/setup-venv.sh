#!/usr/bin/env sh
# Create the virtualenv (if missing), install exactly the packages in the lock file into it, then
# segbench itself, editable, without dependencies.
#
#   tools/setup-venv.sh VENV PYTHON [LOCK]
#
# requirements.lock (written by `make lock`) pins every package with its sha256 hashes: segbench's
# dependencies with all its extras, their dependencies, and uv and pip themselves. The packages
# are ~5 GB of wheels (torch with its CUDA libraries); uv installs them in parallel in about a
# minute, where pip takes about six on 2 cores. uv is told about the same extra indexes,
# find-links and constraints that pip is configured with on this machine, so it takes torch from
# the same local mirror. If uv cannot be installed or fails, pip installs the same hash-checked set.
set -eu
VENV=${1:-.venv}
PYTHON=${2:-python3}
LOCK=${3:-requirements.lock}
. "$(dirname "$0")/uv-env.sh"

make_venv "$VENV" "$PYTHON"

if install_uv "$LOCK"; then
    uv_env
    # Compile .pyc at install time as pip does: where PYTHONDONTWRITEBYTECODE is set (CI here),
    # nothing would ever cache them, and every stage would re-compile mlflow, torch, ... (~5 s).
    export UV_COMPILE_BYTECODE=1
    # sync: exactly the lock, removing whatever else is installed (segbench too, re-added next).
    if "$BIN/uv" pip sync --quiet --python "$BIN/python" --require-hashes "$LOCK" &&
        "$BIN/uv" pip install --quiet --python "$BIN/python" --no-deps -e .; then
        exit 0
    fi
    echo "uv install failed; falling back to pip" >&2
fi
"$BIN/python" -m pip --version >/dev/null 2>&1 || "$BIN/python" -m ensurepip --upgrade
pip_install() { "$BIN/python" -m pip install --quiet --disable-pip-version-check "$@"; }
pip_install --no-deps --require-hashes -r "$LOCK"
pip_install --no-deps -e .
