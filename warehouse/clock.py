"""Row versions: one strictly increasing clock for every versioned write of a process.

ReplacingMergeTree tables (``events``, ``sessions``, the rollups and their marks,
``insights``, ``alert_outbox``) keep the row with the greatest ``version``, so a newer
write must carry a greater one. Versions are nanoseconds since the epoch, so that they also
order writes across restarts, and never go back: a wall clock stepped back (NTP) or two
calls in the same nanosecond still get greater versions than the last one.
"""

from __future__ import annotations

import threading
import time

__all__ = ["next_version"]

_lock = threading.Lock()
_last = 0


def next_version() -> int:
    """A version greater than any handed out before in this process, and not before now
    (epoch nanoseconds). Safe to call from several threads."""
    global _last
    with _lock:
        _last = max(_last + 1, time.time_ns())
        return _last
