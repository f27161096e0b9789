#!/usr/bin/env bash
# The main job: set up .venv, start a local Kafka in the background
# (`eos dev-kafka up`; stop it with `.venv/bin/eos dev-kafka down`), then run
# the demo pipeline under a SIGKILL and verify exactly-once with a
# read_committed consumer. Exits non-zero if verification fails.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup-venv.sh
if [ -n "${EOS_BOOTSTRAP_SERVERS:-}" ]; then
    bootstrap="$EOS_BOOTSTRAP_SERVERS"
else
    bootstrap="$(.venv/bin/eos dev-kafka up | tail -n 1)"
fi
exec .venv/bin/python examples/demo.py --bootstrap-servers "$bootstrap" "$@"
