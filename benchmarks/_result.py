"""The last stdout line of every contender process (no imports beyond the stdlib:
the quixstreams contender imports this from its own virtualenv)."""

from __future__ import annotations

import json
import resource


def print_result(first_consumed: float | None, **extra: object) -> None:
    """Print ``{"first_consumed": unix s, "maxrss_mib": peak RSS, "cpu_s": user+system CPU}``."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "first_consumed": first_consumed,
        "maxrss_mib": usage.ru_maxrss / 1024,  # KiB on Linux
        "cpu_s": usage.ru_utime + usage.ru_stime,
        **extra,
    }
    print(json.dumps(result), flush=True)
