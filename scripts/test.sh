#!/usr/bin/env bash
# The whole test suite: sets up .venv, fetches Kafka with Maven (cached), and
# runs pytest; the fixtures start a real local Kafka themselves (or use
# EOS_BOOTSTRAP_SERVERS). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup-venv.sh
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
