#!/usr/bin/env bash
# The main job: set up .venv, start a local Kafka in the background
# (`eos dev-kafka up`; stop it with `.venv/bin/eos dev-kafka down`), then run
# the demo pipeline (lineage.headers=true) under a SIGKILL and verify
# exactly-once from outside with `eos verify` (read_committed consumers; see
# docs/verify.md), then the outputs' contents. Exits non-zero if verification
# fails.
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
