"""Write requests of a process run `WRITE_CONCURRENCY` at a time, first come first
served, and at most one at a time per key (`RetryingAPIView.write_key`: the ticket they
change, a tenant's ticket creations): the others wait here, before their transaction
starts.

A worker runs Python one thread at a time (the GIL). With sixteen writes in flight, each
gets a sixteenth of the interpreter, so each transaction lasts sixteen times its own work,
and holds its locks that long: the ticket's row, which every other writer of that ticket
waits for, and at the end the tenant's log lock, which every writer of the tenant waits
for. A few at a time is as fast in all (while one waits for PostgreSQL another runs), and
each transaction ends sooner. Two writes of one ticket could only run one after the other
anyway (the row lock): the second waits here rather than in PostgreSQL, so it does not
take a slot that a write of another ticket could use. And a write's latency depends on
the queue in front of it rather than on the interpreter's lottery (docs/benchmarks.md,
"Write slots").

Only the transaction of a write waits here: its body has been read and its response is
written afterwards, so a slow client never holds a slot. A write waiting here holds no
database lock, and a write holding a slot waits only for database locks held by
transactions that are running (in a slot of some process, or outside requests), so the
slots cannot deadlock. A write that calls out over the network while it runs (a webhook
ping) would hold a slot for that long, and could wait for itself if it called this
service: such a view opts out (`RetryingAPIView.uses_write_slot = False`). A write that is
not let in within `WRITE_SLOT_WAIT_SECONDS` is answered 503, with nothing changed.
`WRITE_CONCURRENCY=0` turns all of this off."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Hashable, Iterator

from django.conf import settings

from core.db_retry import DatabaseUnavailable
from core.metrics import WRITE_SLOT_WAIT

logger = logging.getLogger(__name__)


class WriteGate:
    """`size` writes at a time, in the order they came, one at a time per key."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._changed = threading.Condition()
        self._waiting: deque[tuple[object, Hashable | None]] = deque()
        self._running = 0
        self._keys: set[Hashable] = set()

    def _may_enter(self, ticket: object) -> bool:
        if self._running >= self.size:
            return False
        for waiting, key in self._waiting:  # the first one whose key is free goes first
            if key is None or key not in self._keys:
                return waiting is ticket
        return False

    def enter(self, key: Hashable | None, timeout: float) -> bool:
        ticket = object()
        deadline = time.monotonic() + timeout
        with self._changed:
            self._waiting.append((ticket, key))
            let_in = False
            try:
                while not (let_in := self._may_enter(ticket)):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._changed.wait(remaining)
            finally:
                # Out of the queue whatever happened (a timeout, an exception in wait), or
                # the one behind would wait for a place that never moves.
                self._waiting.remove((ticket, key))
                if let_in:
                    self._running += 1
                    if key is not None:
                        self._keys.add(key)
                self._changed.notify_all()  # the next in line may enter, or be first now
            return let_in

    def leave(self, key: Hashable | None) -> None:
        with self._changed:
            self._running -= 1
            self._keys.discard(key)
            self._changed.notify_all()


_gates: dict[int, WriteGate] = {}
_gates_lock = threading.Lock()


def _gate(size: int) -> WriteGate:
    # One gate per size: a test that changes the setting gets a gate of its own. Made
    # under a lock: two of the first writes must not each get a gate.
    with _gates_lock:
        if size not in _gates:
            _gates[size] = WriteGate(size)
        return _gates[size]


@contextlib.contextmanager
def write_slot(key: Hashable | None = None) -> Iterator[None]:
    """Hold one of the process's write slots, and `key` (503 SERVICE_UNAVAILABLE if not let in in time)."""
    size = settings.WRITE_CONCURRENCY
    if size <= 0:
        yield
        return
    gate = _gate(size)
    started = time.monotonic()
    let_in = gate.enter(key, settings.WRITE_SLOT_WAIT_SECONDS)
    try:
        WRITE_SLOT_WAIT.observe(time.monotonic() - started)
        if not let_in:
            logger.warning("event=write_slots_busy waited=%ss slots=%s", settings.WRITE_SLOT_WAIT_SECONDS, size)
            raise DatabaseUnavailable("not_applied")
        yield
    finally:
        if let_in:
            gate.leave(key)
