#!/usr/bin/env sh
# Write the lock file: every package that `make setup` installs, at one exact version each, with
# the sha256 hashes of its files.
#
#   tools/lock.sh VENV PYTHON [LOCK] [uv pip compile options, e.g. --upgrade]
#
# It resolves segbench's dependencies with every extra (pyproject.toml) and the virtualenv's own
# tools (tools/lock-tools.in) for CPython 3.11 on Linux x86_64 with glibc >= 2.28 (torch's
# wheels need it), whatever machine it runs on. Versions already in the lock are kept where they
# still satisfy pyproject.toml; --upgrade takes the newest allowed, --upgrade-package NAME one.
# Indexes are pip's configured ones, as for `make setup`; the lock names no index or file URL,
# so it installs from PyPI as well as from a mirror that serves PyPI's files.
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
uv_env
# pyproject.toml pins torch exactly; the machine's constraint file would only add its own path
# to the lock's comments.
unset UV_CONSTRAINT
"$BIN/uv" pip compile pyproject.toml tools/lock-tools.in \
    --all-extras --generate-hashes \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --custom-compile-command "make lock" --quiet --output-file "$LOCK" "$@"
echo "lock: wrote $LOCK ($(grep -c '^[A-Za-z0-9]' "$LOCK") packages)"
