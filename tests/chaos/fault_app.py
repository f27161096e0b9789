"""Run an example application with fault hooks, for the chaos tests.

    python tests/chaos/fault_app.py EXAMPLE [--crash-after-kafka-commit N]
        [--slow-restore SECONDS] -- EXAMPLE-ARGS...

EXAMPLE is a file in examples/ with a ``build_app(argv, **extra)`` function.
The hooks are passed in as ``faults=`` (eos.testing.faults), never through the
environment.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from eos.faults import Faults
from eos.testing.faults import (
    Combined,
    CrashAfterKafkaCommit,
    CrashBeforeCommit,
    SlowCommits,
    SlowRestore,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser()
    parser.add_argument("example")
    parser.add_argument("--crash-after-kafka-commit", type=int, default=None)
    parser.add_argument("--crash-before-commit", type=int, default=None)
    parser.add_argument("--slow-restore", type=float, default=None)
    parser.add_argument("--slow-commit", type=float, default=None)
    args = parser.parse_args(argv[:split])
    hooks: list[Faults] = []
    if args.crash_after_kafka_commit is not None:
        hooks.append(CrashAfterKafkaCommit(args.crash_after_kafka_commit))
    if args.crash_before_commit is not None:
        hooks.append(CrashBeforeCommit(args.crash_before_commit))
    if args.slow_restore is not None:
        hooks.append(SlowRestore(args.slow_restore))
    if args.slow_commit is not None:
        hooks.append(SlowCommits(args.slow_commit))
    spec = importlib.util.spec_from_file_location("example", EXAMPLES / f"{args.example}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build_app(argv[split + 1 :], faults=Combined(*hooks)).run()


if __name__ == "__main__":
    main()
