#!/usr/bin/env bash
# Runs the Python listener: creates .venv next to this script when missing,
# installs requirements.txt into it when that file changed since the last
# install, then execs listener.py (its configuration is the environment; see
# README.md). Safe to run again and again.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../../bin/lib/pyvenv" "$here" listener.py "$@"
