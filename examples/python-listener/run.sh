#!/usr/bin/env bash
# Runs the Python listener: creates .venv next to this script when missing,
# installs requirements.txt into it when that file changed since the last
# install, then execs listener.py (its configuration is the environment; see
# README.md). Safe to run again and again.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

die() { printf 'error: %s\n' "$*" >&2; exit 1; }

command -v "$python" >/dev/null || die "$python not found: install Python 3.9 or newer"

if [ ! -x "$venv/bin/python" ]; then
    # Debian and Ubuntu ship venv (and the pip it bootstraps) separately.
    "$python" -c 'import ensurepip, venv' 2>/dev/null ||
        die "Python's venv module (with ensurepip) is missing: install it, e.g. 'apt-get install python3-venv', then run this again"
    printf '==> creating %s\n' "$venv" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv" || { rm -rf "$venv"; die "could not create $venv (is python3-venv installed?)"; }
fi

# Install when the requirements changed since the last successful install
# (a stamp file holds a copy of the requirements it installed).
stamp="$venv/.requirements.installed"
if ! cmp -s "$here/requirements.txt" "$stamp"; then
    printf '==> installing requirements into %s\n' "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$stamp"
fi

# -u: unbuffered, so log lines reach a redirected stdout at once.
exec "$venv/bin/python" -u "$here/listener.py" "$@"
