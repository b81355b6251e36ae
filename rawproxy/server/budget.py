"""The bound on memory a server holds for requests at once: the bytes of their bodies
(until each answer is finished) and what the app says it builds from them
(Request.reserve, until the app has answered). One per server; used from the event
loop's thread only."""

from __future__ import annotations

import trio


class BodyBudget:
    __slots__ = ("limit", "held", "_freed")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._freed = trio.Event()  # set (and replaced) whenever bytes are given back

    def try_take(self, n: int) -> bool:
        """Take `n` bytes if there is room for them now."""
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    async def take(self, n: int, patience: float) -> bool:
        """Take `n` bytes, waiting up to `patience` seconds for others to give room back."""
        if n > self.limit:
            return False
        if self.try_take(n):  # room now, the usual case: no cancel scope to set up
            return True
        with trio.move_on_after(patience):
            while not self.try_take(n):
                await self._freed.wait()
            return True
        return False

    def give_back(self, n: int) -> None:
        if n:
            self.held -= n
            self._freed.set()
            self._freed = trio.Event()
