#!/usr/bin/env bash
# The whole test suite: sets up .venv, fetches Kafka with Maven (cached), and
# runs pytest; the fixtures start a real local Kafka themselves (or use
# EOS_BOOTSTRAP_SERVERS). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup-venv.sh
# Two workers (pytest-xdist): most of the suite waits on brokers, timeouts and outages,
# so two run in about the time of one on two cores. EOS_TEST_WORKERS=0 runs serially.
workers="${EOS_TEST_WORKERS:-2}"
parallel=()
if [ "$workers" != "0" ]; then
    parallel=(-n "$workers" --dist loadgroup)
fi
exec .venv/bin/python -m pytest -p no:cacheprovider ${parallel[@]+"${parallel[@]}"} "$@"
