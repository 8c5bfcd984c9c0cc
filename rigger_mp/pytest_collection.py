"""Tell the dispatcher which tests a pytest session expects: ``collect_tests``.

Once per session, by the process that owns it, after collection (and deselection):
``collect_tests(run_id, session_id, tests=[[test_location, test_name], ...])`` in chunks
of at most :data:`CHUNK_BYTES` of JSON each, so that any number of tests (100,000 and
more) goes well within the dispatcher's ``max_message_bytes`` (1 MiB by default).
``test_location`` and ``test_name`` are the ones ``start_test`` and ``finish_test`` carry,
each cut to :data:`MAX_ID` characters, as the dispatcher keeps them.

- Without xdist, pytest collects in the session's process: ``pytest_collection_finish``
  gives the items themselves.
- Under xdist the controller does not collect; each worker does, and the controller
  hears their test ids in ``pytest_xdist_node_collection_finished``: the first worker's
  are sent (every worker collects the same tests). A test id
  (``tests/test_x.py::TestC::test_y[a::b]``) becomes its location (the file) and its name
  (``TestC.test_y[a::b]``): the parts after the file joined with ``.``, up to the
  parameters, which stay as they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final, Protocol

import pytest

CHUNK_BYTES: Final = 64 * 1024
"""Most bytes of test ids (as JSON) in one collect_tests event."""
MAX_ID: Final = 1000
"""Characters of a location or a name sent: what the dispatcher keeps of each."""
EVENT: Final = "collect_tests"


class Session(Protocol):
    """What this module needs of the pytest plugin's session (its ``Session``)."""

    is_worker: bool

    def fire(self, hook_name: str, what: str = "", /, **data: Any) -> None: ...


def split_nodeid(nodeid: str) -> tuple[str, str]:
    """``(location, name)`` of a test id, as pytest's ``item.location`` has them."""
    head, bracket, params = nodeid.partition("[")
    location, _, rest = head.partition("::")
    return location, rest.replace("::", ".") + bracket + params


def chunks(tests: Iterable[Sequence[str]], limit: int = CHUNK_BYTES) -> Iterator[list[list[str]]]:
    """The tests in lists of at most ``limit`` bytes of JSON each (a test longer than
    ``limit`` alone in its list)."""
    chunk: list[list[str]] = []
    size = 2
    for location, name in tests:
        pair = [location[:MAX_ID], name[:MAX_ID]]
        width = len(json.dumps(pair)) + 2  # and ", " (ASCII: as the client may send it)
        if chunk and size + width > limit:
            yield chunk
            chunk, size = [], 2
        chunk.append(pair)
        size += width
    if chunk:
        yield chunk


class CollectedTests:
    """Sends the session's collected test ids once (the session's process only)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.sent = False

    def send(self, tests: Iterable[Sequence[str]]) -> None:
        if self.sent:
            return
        self.sent = True
        for chunk in chunks(tests):
            self.session.fire(EVENT, f"{len(chunk):,} test ids", tests=chunk)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.send((item.location[0], item.location[2]) for item in session.items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: Sequence[str]) -> None:
        self.send(split_nodeid(nodeid) for nodeid in ids)


def register(config: pytest.Config, session: Session) -> None:
    """Send the collected tests of ``session``, unless it is an xdist worker's."""
    if not session.is_worker:
        config.pluginmanager.register(CollectedTests(session), "rigger_mp_collection")
