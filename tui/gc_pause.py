"""Full garbage collections when the user is not pressing keys.

Every dialog and footer change leaves a few thousand objects in reference cycles; they live
long enough to reach Python's oldest generation, whose automatic collection then walks every
long-lived object: measured 31 full collections a minute of 70-180 ms each while `?` was
pressed every half second during a replay, which made the slowest key presses (p95 118-190
ms). Here the oldest generation is collected when Python's rule says it is due, but on a timer,
only after a quiet moment without keys, and the objects of the console's start are frozen out
of every collection. Memory stays bounded: a due collection waits at most MAX_WAIT_S.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

QUIET_S = 1.0  # no key for this long: a pause now is not felt
EVERY_S = 5.0  # a full collection at most this often ...
MAX_WAIT_S = 10.0  # ... and a due one waits at most this long, keys or not
GEN2_OFF = 1_000_000  # gen-1 collections before an automatic full one: never, in practice


class IdleCollector:
    """Owns the oldest generation's collections for a process with one UI loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last_key = self.last_full = clock()
        self.full_runs = 0
        self._saved: tuple[int, int, int] | None = None

    def start(self) -> None:
        """Freeze what exists (the loaded console) and stop automatic full collections."""
        gc.collect()
        gc.freeze()
        self._saved = gc.get_threshold()
        g0, g1, _ = self._saved
        gc.set_threshold(g0, g1, GEN2_OFF)

    def stop(self) -> None:
        """Give the process its own collector back (the console has closed)."""
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            gc.unfreeze()
            self._saved = None

    def key(self) -> None:
        self.last_key = self.clock()

    def tick(self) -> bool:
        """Run a full collection when Python's own rule asks for one (gen-1 collections
        since the last reached its threshold), at a quiet moment; True when one ran."""
        if self._saved is None or gc.get_count()[2] < self._saved[2]:
            return False  # not due: an idle console costs nothing
        now = self.clock()
        since = now - self.last_full
        quiet = now - self.last_key >= QUIET_S
        if (quiet and since >= EVERY_S) or since >= MAX_WAIT_S:
            gc.collect()
            self.last_full = self.clock()
            self.full_runs += 1
            return True
        return False
