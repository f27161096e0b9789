#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install eos
# with its test extras. Sourced by demo.sh and test.sh; prints progress.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
venv="$root/.venv"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "eos needs Python 3.10 or newer; $python is $("$python" --version 2>&1)" >&2
    exit 2
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating virtual environment $venv" >&2
    "$python" -m venv "$venv"
fi
stamp="$venv/.eos-installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    echo "setup: installing eos and its test dependencies" >&2
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet -e "$root[test]" >&2
    touch "$stamp"
fi
