#!/usr/bin/env sh
# Write the lock file: every package that `make setup` installs, at one exact version each, with
# the sha256 hashes of its files.
#
#   LOCK_INDEX_URL=URL tools/lock.sh VENV PYTHON [LOCK] [uv pip compile options, e.g. --upgrade]
#
# It resolves segbench's dependencies with every extra (pyproject.toml) and the virtualenv's own
# tools (tools/lock-tools.in) for CPython 3.11 on Linux x86_64 with glibc >= 2.28 (torch's
# wheels need it), whatever machine it runs on. Versions already in the lock are kept where they
# still satisfy pyproject.toml; --upgrade takes the newest allowed, --upgrade-package NAME one.
#
# It reads one index, PyPI unless LOCK_INDEX_URL names another, and none of the extra indexes
# and find-links that `make setup` uses: a local mirror that holds only some files of a version
# (one wheel of torch, only the manylinux_2_34 wheel of cryptography) would change the versions
# chosen and leave the other files' hashes out. So the lock is the same wherever it is made; it
# names no index or file URL, and `make setup` takes each file from whichever configured index
# has it, checked against these hashes.
set -eu
VENV=${1:-.venv}
PYTHON=${2:-python3}
LOCK=${3:-requirements.lock}
[ $# -gt 3 ] && shift 3 || set --
. "$(dirname "$0")/uv-env.sh"

make_venv "$VENV" "$PYTHON"
install_uv "$LOCK" || {
    echo "lock: cannot install uv into $VENV" >&2
    exit 1
}
unset UV_EXTRA_INDEX_URL UV_INDEX UV_FIND_LINKS UV_CONSTRAINT UV_INDEX_STRATEGY
"$BIN/uv" pip compile pyproject.toml tools/lock-tools.in \
    --index-url "${LOCK_INDEX_URL:-https://pypi.org/simple}" \
    --all-extras --generate-hashes \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --custom-compile-command "make lock" --quiet --output-file "$LOCK" "$@"
echo "lock: wrote $LOCK ($(grep -c '^[A-Za-z0-9]' "$LOCK") packages)"
