"""The pytest plugin's sender: one thread per pytest process fires its events, pipelined.

::

    test thread ── submit(hook, what, data) ──▶ queue (MAX_QUEUED) ──▶ sender thread
                                                                        │ encode, give an id
                                                                        ▼
                                        spool (memory, then a file) ── fire_lines, MAX_BATCH
                                                                        │  at a time
                                              lost (refused, or given up on) ◀┘

A test no longer waits for a round trip per event: :meth:`Sender.submit` puts the event
into a bounded queue (it blocks only while :data:`MAX_QUEUED` events wait there) and the
sender thread fires what has gathered as one pipelined batch. Every event carries a fire
id, so a batch whose connection broke is sent again whole: the dispatcher answers the
events it had accepted with their first tid and does not run them again.

While the dispatcher cannot be reached, events wait in the :class:`~.pytest_spool.Spool`
and the sender tries again, 50 ms after the failure, then twice as long each time, at
most 1 s apart, for ``spool_seconds`` from the first failure. Then it gives up: the
events spooled are lost, and so is each later batch that cannot be sent at its first
try, until one is sent. An event refused by the dispatcher (``bad_request``, say), or
past the spool's bytes, is lost at once. Lost events go to ``on_lost`` (the plugin's
list and its one warning), from this thread.

:meth:`Sender.flush` returns once every event submitted before it is sent or lost;
:meth:`Sender.close` flushes and ends the thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from . import protocol as proto
from .client import RemoteError, RiggerConnectionError, RiggerTimeout
from .errors import RiggerError
from .pytest_spool import Spool, Spooled

MAX_QUEUED: Final = 1000
"""Events the test thread may hand over before :meth:`Sender.submit` waits for the sender."""
MAX_BATCH: Final = 512
"""Events fired in one pipelined batch."""
SPOOL_SECONDS: Final = 60.0
"""Default of ``--rigger-spool-seconds``: how long an unreachable dispatcher is retried."""
FIRST_PAUSE: Final = 0.05
LAST_PAUSE: Final = 1.0

class FireClient(Protocol):
    """What the sender uses of :class:`~rigger_mp.client.RiggerClient`."""

    def new_id(self) -> str: ...
    def fire_lines(
        self, lines: Sequence[bytes], fire_ids: Sequence[str]
    ) -> list[str | RemoteError]: ...


LostSink = Callable[[str, str, str], None]
"""``on_lost(hook_name, what, reason)``: one event could not be fired."""


class _Flush:
    """A marker in the queue: set once everything before it is sent or lost."""

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP: Final = object()


class Sender:
    """Fires one process's events from a thread of its own (see the module docstring)."""

    def __init__(
        self,
        client: FireClient,
        on_lost: LostSink,
        spool_seconds: float = SPOOL_SECONDS,
        spool: Spool | None = None,
    ) -> None:
        self.client = client
        self.on_lost = on_lost
        self.spool_seconds = spool_seconds
        self.spool = spool if spool is not None else Spool()
        self.sent = 0
        """Events the dispatcher acked (a resent duplicate too: it was accepted once)."""
        self.outages = 0
        """Times the dispatcher stopped answering and the events were spooled."""
        self._queue: queue.Queue[Any] = queue.Queue(MAX_QUEUED)
        self._flushes: list[_Flush] = []
        self._stopping = False
        self._down_since: float | None = None
        self._gave_up = False
        self._reason = ""
        self._thread = threading.Thread(target=self._run, name="rigger_mp-sender", daemon=True)
        self._thread.start()

    # -- the test thread's side ----------------------------------------------------------

    def submit(self, hook_name: str, what: str, data: dict[str, Any]) -> None:
        """Hand over one event (``what``: its subject in the lost list)."""
        if not self._thread.is_alive():
            self.on_lost(hook_name, what, "the sender has stopped")
            return
        self._queue.put((hook_name, what, data))

    def flush(self) -> None:
        """Return once every event submitted so far is sent or counted lost."""
        if not self._thread.is_alive():
            return
        marker = _Flush()
        self._queue.put(marker)
        marker.done.wait()

    def close(self) -> None:
        """Flush, end the thread, close the spool's file."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self.spool.close()

    # -- the sender thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a fault of ours (or a full disk under the spool)
            why = f"the sender failed: {type(exc).__name__}: {exc}"
            for event in self.spool.take_all():
                self.on_lost(event.hook_name, event.what, why)
            while True:  # what is queued is lost too, and no flush waits forever
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, tuple):
                    self.on_lost(item[0], item[1], why)
                elif isinstance(item, _Flush):
                    self._flushes.append(item)
            self._flushed()
            raise

    def _loop(self) -> None:
        pause = FIRST_PAUSE
        while True:
            if not len(self.spool):
                self._flushed()
                if self._stopping:
                    return
                self._take(self._queue.get())
            self._take_queued()
            if not len(self.spool):
                continue
            if self._send_batch():
                pause = FIRST_PAUSE
                continue
            # The dispatcher is down: wait before the next try, taking events meanwhile.
            until = time.monotonic() + pause
            pause = min(2 * pause, LAST_PAUSE)
            while (left := until - time.monotonic()) > 0:
                try:
                    self._take(self._queue.get(timeout=left))
                except queue.Empty:
                    break

    def _take_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            self._take(item)

    def _take(self, item: Any) -> None:
        if item is _STOP:
            self._stopping = True
        elif isinstance(item, _Flush):
            self._flushes.append(item)
        else:
            self._spool(*item)

    def _flushed(self) -> None:
        flushes, self._flushes = self._flushes, []
        for marker in flushes:
            marker.done.set()

    def _spool(self, hook_name: str, what: str, data: dict[str, Any]) -> None:
        """Encode an event with a new fire id and spool it (or count it lost)."""
        fire_id = self.client.new_id()
        try:
            line = proto.encode_fire(hook_name, data, {}, fire_id)
        except TypeError as exc:
            self.on_lost(hook_name, what, str(exc))
            return
        if not self.spool.push(Spooled(hook_name, what, fire_id, line)):
            why = f"the spool is full ({self.spool.max_bytes:,} bytes, --rigger-spool-bytes)"
            if self._reason:
                why += f" while the dispatcher could not be reached: {self._reason}"
            self.on_lost(hook_name, what, why)

    def _send_batch(self) -> bool:
        """Fire the spool's first events; False if the dispatcher could not be reached
        (the events stay spooled, unless the sender gave up on them)."""
        batch = self.spool.peek(MAX_BATCH)
        try:
            results = self.client.fire_lines(
                [event.line for event in batch], [event.fire_id for event in batch]
            )
        except (RiggerConnectionError, RiggerTimeout, OSError) as exc:
            return self._down(exc)
        except RiggerError as exc:  # an error reply to auth on reconnecting, say
            self.spool.drop(len(batch))
            for event in batch:
                self.on_lost(event.hook_name, event.what, str(exc))
            return True
        self.spool.drop(len(batch))
        self._down_since, self._gave_up, self._reason = None, False, ""
        for event, result in zip(batch, results, strict=True):
            if isinstance(result, RemoteError):
                self.on_lost(event.hook_name, event.what, str(result))
            else:
                self.sent += 1
        return True

    def _down(self, exc: BaseException) -> bool:
        now = time.monotonic()
        self._reason = str(exc) or type(exc).__name__
        if self._down_since is None:
            self._down_since = now
            self.outages += 1
        if not self._gave_up and now - self._down_since < self.spool_seconds:
            return False
        self._gave_up = True
        why = self._reason
        if self.spool_seconds:
            why += f" (retried for {self.spool_seconds:g} s, --rigger-spool-seconds)"
        for event in self.spool.take_all():
            self.on_lost(event.hook_name, event.what, why)
        return True
