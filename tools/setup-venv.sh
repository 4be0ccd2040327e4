#!/usr/bin/env sh
# Create the virtualenv (if missing) and install segbench into it, editable, with its pipeline and dev extras.
#
#   tools/setup-venv.sh VENV PYTHON
#
# The dependencies are ~5 GB of wheels (torch with its CUDA libraries); uv installs them in
# parallel in about a minute, where pip takes about six on 2 cores. uv is told about the same
# extra indexes, find-links and constraints that pip is configured with on this machine, so it
# picks the same torch. If uv cannot be installed or fails, pip does the job.
set -eu
VENV=${1:-.venv}
PYTHON=${2:-python3}
BIN="$VENV/bin"

if [ ! -x "$BIN/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi

pip_config() { "$BIN/python" -m pip config get "$1" 2>/dev/null || true; }

if "$BIN/python" -m pip install --quiet --disable-pip-version-check "uv>=0.5" 2>/dev/null; then
    extra=$(pip_config global.extra-index-url)
    links=$(pip_config global.find-links)
    constraint=$(pip_config global.constraint)
    [ -n "$extra" ] && export UV_EXTRA_INDEX_URL="$extra"
    [ -n "$links" ] && export UV_FIND_LINKS="$links"
    [ -n "$constraint" ] && export UV_CONSTRAINT="$constraint"
    export UV_INDEX_STRATEGY=unsafe-best-match
    # Compile .pyc at install time as pip does: where PYTHONDONTWRITEBYTECODE is set (CI here),
    # nothing would ever cache them, and every stage would re-compile mlflow, torch, ... (~5 s).
    export UV_COMPILE_BYTECODE=1
    if "$BIN/uv" pip install --quiet --python "$BIN/python" -e ".[pipeline,dev]"; then
        exit 0
    fi
    echo "uv install failed; falling back to pip" >&2
fi
"$BIN/python" -m pip install --quiet --disable-pip-version-check -e ".[pipeline,dev]"
