"""The last stdout line of every contender process (no imports beyond the stdlib:
the quixstreams contender imports this from its own virtualenv)."""

from __future__ import annotations

import json
import resource
import time


def peak_rss_mib() -> float:
    """This process's peak resident set size, MiB.

    ``VmHWM`` of ``/proc/self/status`` where there is one: the high-water mark
    of this program's own memory. ``getrusage``'s ``ru_maxrss`` is the
    fallback only, because Linux carries it across ``execve``: a contender
    started by a parent holding 300 MiB would report at least 300 MiB.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def print_result(first_consumed: float | None, **extra: object) -> None:
    """Print ``{"first_consumed": unix s, "maxrss_mib": peak RSS, "cpu_s": user+system CPU,
    "thread_cpu_s": the calling (main) thread's CPU}``: call it from the main thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "first_consumed": first_consumed,
        "maxrss_mib": peak_rss_mib(),
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "thread_cpu_s": time.thread_time(),
        **extra,
    }
    print(json.dumps(result), flush=True)
