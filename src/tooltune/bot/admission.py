"""Admission to a server's model: at most `limit` chat requests in progress; one more is refused at once (503) with a
Retry-After estimated from how long recent requests took."""

from __future__ import annotations

import contextlib
import math
import threading
import time

from tooltune.bot.api import ApiError


class Admission:
    """At most `limit` chat requests in progress; one more is refused at once (503) with a Retry-After estimated
    from how long recent requests took. `with admission.enter() as ticket:` holds a place until the block ends, or,
    after `ticket.handed_over()`, until `leave()` (a stream that ends later)."""

    def __init__(self, limit: int, batch: int):
        self.limit, self.batch = limit, batch
        self.active = 0
        self.seconds = 1.0
        """A running mean of how long a request held its place."""
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}

    @contextlib.contextmanager
    def enter(self):
        with self._lock:
            if self.active >= self.limit:
                wait = max(1, math.ceil(self.seconds * self.active / self.batch))
                raise ApiError(503, f"the server has {self.active} requests in progress, its limit; retry after "
                                    f"{wait} s", type="server_error", code="server_overloaded",
                               headers={"Retry-After": str(wait)})
            self.active += 1
        ticket = _Ticket(self)
        try:
            yield ticket
        finally:
            if not ticket.kept:
                ticket.release()

    def leave(self, seconds: float) -> None:
        with self._lock:
            self.active -= 1
            self.seconds = 0.8 * self.seconds + 0.2 * seconds


class _Ticket:
    """A place held in `Admission`; `release` gives it back once, however often it is called."""

    def __init__(self, admission: Admission):
        self.admission, self.start = admission, time.monotonic()
        self.kept = self.released = False
        self._lock = threading.Lock()

    def handed_over(self) -> None:
        self.kept = True

    def release(self) -> None:
        with self._lock:
            if self.released:
                return
            self.released = True
        self.admission.leave(time.monotonic() - self.start)
