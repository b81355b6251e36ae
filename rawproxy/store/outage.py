"""One store's failures, told once per outage.

A store that fails (a locked, corrupted or full SQLite file; a network store that is
down) fails every request until it recovers: logging each failure would bury the log.
The first failure of an outage is logged with its cause, the recovery once, and every
failure is counted (`errors`, read by /metrics).
"""

from __future__ import annotations

import logging

log = logging.getLogger("rawproxy.store")


class Outage:
    def __init__(self, name: str) -> None:
        self.name = name  # the store as the operator named it, e.g. sqlite:PATH
        self.errors = 0
        self.down = False

    def failed(self, what: str, cause: object) -> None:
        """An operation that failed: counted, and logged when it starts an outage."""
        self.errors += 1
        self.trouble(f"{what} failed: {cause}")

    def trouble(self, why: str) -> None:
        """Something that costs remembered reasoning (a failure, a timeout, a full queue)."""
        if not self.down:
            self.down = True
            log.warning("reasoning store unavailable (%s: %s); requests go on without remembered "
                        "reasoning until it recovers", self.name, why)

    def ok(self) -> None:
        if self.down:
            self.down = False
            log.warning("reasoning store %s recovered", self.name)
