"""``python -m eos``: the same command line as the ``eos`` console script."""

from __future__ import annotations

import sys

from eos.cli import main

if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess
    sys.exit(main())
