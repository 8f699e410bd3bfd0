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


class _Waiter:
    """A write in the queue, woken only when it has been let in (or its time is up)."""

    __slots__ = ("admitted", "key", "passed", "woken")

    def __init__(self, key: Hashable | None, lock: threading.Lock) -> None:
        self.key = key
        self.admitted = False
        self.passed = 0  # writes let in before it, from behind it in the queue
        self.woken = threading.Condition(lock)


class WriteGate:
    """`size` writes at a time, in the order they came, one at a time per key.

    A write whose key is busy lets those behind it go first, up to `size` of them; then
    they wait for it. Without that bound, when a burst of writes meets on as many tickets
    as there are slots, each ticket's writes form a queue of their own, and a writer waits
    behind however many others happened to pick its ticket (16 writers on 3 tickets with
    3 slots: p99 383-513 ms, 230-292 ms with the bound; docs/benchmarks.md). The bound
    costs at most one write's duration: the one the barring waiter waits for.

    A write that leaves lets the next ones in itself and wakes only them. Waking every
    waiter to let each check whether it is its turn (one shared condition) cost, with
    sixteen writers on three tickets, a dozen threads scrambling for the interpreter twice
    per write, while the writes in the slots held their row locks."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._waiting: deque[_Waiter] = deque()
        self._running = 0
        self._keys: set[Hashable] = set()

    def _admit(self) -> None:
        """Let in, in order, every waiter that may enter now: while a slot is free, the
        first one whose key is free, unless a waiter in front of it has been passed
        `size` times already. Called with the lock held."""
        if self._running >= self.size:
            return
        passed: list[_Waiter] = []
        for waiter in list(self._waiting):
            if waiter.key is not None and waiter.key in self._keys:
                if waiter.passed >= self.size:
                    return  # passed often enough: those behind it wait for it now
                passed.append(waiter)
                continue
            for earlier in passed:
                earlier.passed += 1
            self._waiting.remove(waiter)
            self._running += 1
            if waiter.key is not None:
                self._keys.add(waiter.key)
            waiter.admitted = True
            waiter.woken.notify()
            if self._running >= self.size or any(earlier.passed >= self.size for earlier in passed):
                return

    def _release(self, key: Hashable | None) -> None:
        self._running -= 1
        self._keys.discard(key)
        self._admit()

    def enter(self, key: Hashable | None, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            waiter = _Waiter(key, self._lock)
            self._waiting.append(waiter)
            # Everything from here on is inside the `try`: a write that fails in the line
            # (a key that cannot be hashed fails in `_admit`) leaves it, or it would fail
            # every later admission and no write of the process would get in again.
            try:
                self._admit()
                while not waiter.admitted and (remaining := deadline - time.monotonic()) > 0:
                    waiter.woken.wait(remaining)
            except BaseException:
                # Interrupted while waiting: give back the place, or the slot if it had
                # just been let in, or the writes behind would wait for it forever.
                if waiter.admitted:
                    self._release(key)
                raise
            finally:
                if not waiter.admitted:
                    self._waiting.remove(waiter)
                    self._admit()  # it may have been the one those behind waited for
            return waiter.admitted

    def leave(self, key: Hashable | None) -> None:
        with self._lock:
            self._release(key)


_gates: dict[int, WriteGate] = {}
_gates_lock = threading.Lock()


def _gate(size: int) -> WriteGate:
    # One gate per size: a test that changes the setting gets a gate of its own. Made
    # under a lock: two of the first writes must not each get a gate.
    with _gates_lock:
        if size not in _gates:
            _gates[size] = WriteGate(size)
        return _gates[size]


# The same 503 as a database that cannot be reached (clients handle both alike: send it
# again), with a message that names the cause.
BUSY_MESSAGE = "The server is busy with other changes; nothing was changed. Send the same request again."


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
            raise DatabaseUnavailable("not_applied", BUSY_MESSAGE)
        yield
    finally:
        if let_in:
            gate.leave(key)
