# Shared by tools/setup-venv.sh and tools/lock.sh (sourced, POSIX sh): the virtualenv, the uv
# that requirements.lock pins, and pip's configured indexes handed to uv.

make_venv() {  # VENV PYTHON: create the virtualenv if it is missing; sets BIN
    BIN="$1/bin"
    if [ ! -x "$BIN/python" ]; then
        "$2" -m venv "$1"
    fi
}

install_uv() {  # LOCK: install the uv that LOCK pins, hash-checked, with the virtualenv's pip
    req=$(mktemp)
    # The uv entry: its "uv==X \" line and the hash lines after it, up to the first without "\".
    awk '/^uv==/ { found = 1 } found { print } found && !/\\$/ { exit }' "$1" >"$req" 2>/dev/null || true
    if [ -s "$req" ]; then
        set -- --no-deps --require-hashes -r "$req"
    else
        echo "no uv in $1; installing the newest uv" >&2
        set -- uv
    fi
    status=0
    "$BIN/python" -m pip install --quiet --disable-pip-version-check "$@" 2>/dev/null || status=$?
    rm -f "$req"
    return $status
}

uv_env() {  # tell uv about the extra indexes and find-links that pip is configured with here
    extra=$("$BIN/python" -m pip config get global.extra-index-url 2>/dev/null || true)
    links=$("$BIN/python" -m pip config get global.find-links 2>/dev/null || true)
    constraint=$("$BIN/python" -m pip config get global.constraint 2>/dev/null || true)
    if [ -n "$extra" ]; then export UV_EXTRA_INDEX_URL="$extra"; fi
    if [ -n "$links" ]; then export UV_FIND_LINKS="$links"; fi
    if [ -n "$constraint" ]; then export UV_CONSTRAINT="$constraint"; fi
    # A locked version may lie on a local mirror or only on PyPI: look in every index.
    export UV_INDEX_STRATEGY=unsafe-best-match
}
