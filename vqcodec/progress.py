"""Progress of long single-image work, tile by tile: the library ticks, a front end (the CLI) listens.

    with progress.listening(callback):   # callback(what, total) once per finished tile
        codec.compress(...)
"""
from __future__ import annotations

import os
from contextlib import contextmanager

_listener = None


@contextmanager
def listening(callback):
    global _listener
    old, _listener = _listener, callback
    try:
        yield
    finally:
        _listener = old


def tick(what: str, total: int) -> None:
    """One tile of `total` done in the step `what` (encoding, entropy coding, colour layer, entropy decoding,
    decoding)."""
    if _listener is not None:
        _listener(what, total)


def default_threads() -> int:
    """Threads for one image's work that do not oversubscribe a busy machine: the CPUs this process may use,
    less the load already running (1-minute load average), at most 4 and at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except (AttributeError, OSError):
        busy = 0
    return max(1, min(4, cpus - busy))
