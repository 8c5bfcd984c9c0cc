"""RiggerClient against a real server on 127.0.0.1: API, errors, reconnection, threads."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from rigger_mp import (
    FireManyError,
    RemoteError,
    Rigger,
    RiggerClient,
    RiggerConnectionError,
    RiggerError,
    RiggerTimeout,
)
from tests._tcp import HOST, WAIT, counter, make_rigger, port_of, server_pid
from tests.conftest import Dispatchers


@pytest.fixture
def rigger(dispatchers: Dispatchers) -> Rigger:
    return dispatchers.add(make_rigger(idle_timeout=0.5))


@pytest.fixture
def client(rigger: Rigger) -> Iterator[RiggerClient]:
    assert rigger.server_port is not None
    with RiggerClient(HOST, rigger.server_port, timeout=WAIT) as c:
        yield c


def test_fire_hook_returns_tid_output_or_true(client: RiggerClient, rigger: Rigger) -> None:
    tid = client.fire_hook("count", c="a", i=1)
    assert isinstance(tid, str) and re.fullmatch(r"tcp1-\d+", tid), tid  # server 1's tids
    output = client.fire_hook("count", grab_result=True, c="a", i=2)
    assert output["c"] == "a" and output["i"] == 2 and output["counted"] is True
    assert client.fire_hook("count", wait_for_task=True, c="a", i=3) is True
    assert counter(rigger).seen == {("a", 1): 1, ("a", 2): 1, ("a", 3): 1}


def test_data_by_position_is_a_type_error_not_a_flag(client: RiggerClient, rigger: Rigger) -> None:
    with pytest.raises(TypeError, match="positional"):
        client.fire_hook("count", {"c": "b", "i": 1})  # type: ignore[call-arg, arg-type]
    assert client.fire_hook("count", wait_for_task=True, c="b", i=2) is True
    assert counter(rigger).seen == {("b", 2): 1}  # the first call fired nothing


def test_failed_event_raises_remote_error_with_code_and_tid(client: RiggerClient) -> None:
    with pytest.raises(RemoteError) as info:
        client.fire_hook("fail", wait_for_task=True)
    assert info.value.code == "hook_failed"
    assert "ValueError: boom" in info.value.message
    assert info.value.tid is not None
    assert isinstance(info.value, RiggerError)
    assert client.ping()  # the connection is still good


def test_unserialisable_output_raises_not_serializable(client: RiggerClient) -> None:
    with pytest.raises(RemoteError) as info:
        client.fire_hook("opaque", grab_result=True)
    assert info.value.code == "not_serializable" and "'handle'" in info.value.message


def test_unserialisable_argument_is_a_type_error_naming_the_key_before_sending(
    client: RiggerClient, rigger: Rigger
) -> None:
    before = rigger.stats()["events"]["accepted"]
    with pytest.raises(TypeError, match="'when'"):
        client.fire_hook("count", c=1, when=object())
    with pytest.raises(TypeError, match="'ratio'"):
        client.fire_hook("count", ratio=float("nan"))
    with pytest.raises(TypeError, match="'bad'"):
        client.fire_many([("count", {"i": 1}), ("count", {"bad": {1, 2}})])
    assert client.ping()
    assert rigger.stats()["events"]["accepted"] == before


def test_fire_many_pipelines_a_large_batch_in_order(client: RiggerClient, rigger: Rigger) -> None:
    pad = "x" * 200  # ~11 MB in all: far more than the socket buffers hold
    tids = client.fire_many(("count", {"c": "many", "i": i, "pad": pad}) for i in range(50_000))
    assert len(tids) == 50_000
    numbers = [int(t.removeprefix("tcp1-")) for t in tids]
    assert numbers == list(range(numbers[0], numbers[0] + 50_000))
    assert client.fire_hook("count", wait_for_task=True)
    seen = counter(rigger).seen
    assert all(seen[("many", i)] == 1 for i in range(50_000))
    assert client.fire_many([]) == []


def test_fire_many_reports_refused_events() -> None:
    rigger = make_rigger(server_token="tok")
    assert rigger.server_port is not None
    try:
        with RiggerClient(HOST, rigger.server_port) as anonymous:  # no token: all refused
            with pytest.raises(FireManyError) as info:
                anonymous.fire_many([("count", {"i": 1}), ("count", {"i": 2})])
            assert info.value.code == "unauthorized"
            assert [r.code for r in info.value.results if isinstance(r, RemoteError)] == [
                "unauthorized",
                "unauthorized",
            ]
        with RiggerClient(HOST, rigger.server_port, token="tok") as member:
            assert len(member.fire_many([("count", {"i": 1})])) == 1
    finally:
        rigger.stop()


def test_token() -> None:
    secured = make_rigger(server_token="tok")
    assert secured.server_port is not None
    try:
        with RiggerClient(HOST, secured.server_port, token="tok") as good:
            assert good.fire_hook("count", wait_for_task=True)
        with RiggerClient(HOST, secured.server_port, token="nope") as wrong:
            with pytest.raises(RemoteError) as info:
                wrong.ping()
            assert info.value.code == "unauthorized"
        with (
            RiggerClient(HOST, secured.server_port) as missing,
            pytest.raises(RemoteError, match="unauthorized"),
        ):
            missing.ping()
    finally:
        secured.stop()


def test_task_status_ping_and_stats(client: RiggerClient) -> None:
    tid = client.fire_hook("count", c="s")
    assert client.fire_hook("count", wait_for_task=True)
    assert client.task_status(tid) == {"tid": tid, "status": "done"}
    with pytest.raises(RemoteError) as info:
        client.task_status("123456789")
    assert info.value.code == "unknown_task"
    assert client.ping() is True
    stats = client.stats()
    assert stats["events"]["done"] >= 2 and stats["server"]["accepted"] >= 2


def test_terminate_stops_the_dispatcher_after_draining() -> None:
    rigger = make_rigger()
    assert rigger.server_port is not None
    with RiggerClient(HOST, rigger.server_port) as client:
        client.fire_many(("count", {"i": i}) for i in range(1000))
        assert client.terminate() is True
        # The reply comes once the drain is done; the server process ends just after.
        assert rigger.wait_stopped(WAIT)
        with pytest.raises(RiggerConnectionError):
            client.ping()  # the listening socket is closed
    assert sum(counter(rigger).seen.values()) == 1000


def test_reconnects_after_the_server_closed_an_idle_connection(
    client: RiggerClient, rigger: Rigger
) -> None:
    assert client.ping()
    sock = client._sock
    assert sock is not None
    readable, _, _ = select.select([sock], [], [], WAIT)  # the server closes it (idle 0.5 s)
    assert readable
    assert client.fire_hook("count", wait_for_task=True, c="again")
    assert counter(rigger).seen[("again", None)] == 1


def test_reconnects_after_the_server_process_was_killed(
    client: RiggerClient, rigger: Rigger
) -> None:
    assert client.fire_hook("count", wait_for_task=True, c="k", i=0)
    sock = client._sock
    assert sock is not None
    os.kill(server_pid(rigger), signal.SIGKILL)
    readable, _, _ = select.select([sock], [], [], WAIT)  # its connection is gone
    assert readable
    assert client.fire_hook("count", grab_result=True, c="k", i=1)["i"] == 1
    assert counter(rigger).seen[("k", 1)] == 1


def test_connection_refused_is_a_clear_error() -> None:
    with socket.socket() as placeholder:  # bound, never listening: connecting is refused
        placeholder.bind((HOST, 0))
        port = placeholder.getsockname()[1]
        client = RiggerClient(HOST, port, timeout=5)
        with pytest.raises(RiggerConnectionError, match=f"cannot connect to 127.0.0.1:{port}"):
            client.ping()


def test_timeout_raises_and_the_next_call_reconnects(rigger: Rigger) -> None:
    assert rigger.server_port is not None
    plugin = counter(rigger)
    with RiggerClient(HOST, rigger.server_port, timeout=0.3) as impatient:
        with pytest.raises(RiggerTimeout):
            impatient.fire_hook("block", wait_for_task=True)
        plugin.release.set()
        assert impatient.fire_hook("count", wait_for_task=True, c="t")
    assert plugin.seen[("t", None)] == 1


def test_one_client_shared_by_threads(client: RiggerClient, rigger: Rigger) -> None:
    tids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(cid: int) -> None:
        try:
            for i in range(200):
                if i % 50 == 0:
                    out = client.fire_hook("count", grab_result=True, c=cid, i=i)
                    assert (out["c"], out["i"]) == (cid, i)
                    continue
                tid = client.fire_hook("count", c=cid, i=i)
                with lock:
                    tids.append(tid)
        except BaseException as exc:  # re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(cid,)) for cid in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    assert len(set(tids)) == 8 * 196
    assert client.fire_hook("count", wait_for_task=True)
    seen = counter(rigger).seen
    assert all(seen[(c, i)] == 1 for c in range(8) for i in range(200))


def test_client_in_another_process(rigger: Rigger) -> None:
    code = (
        "import json, sys\n"
        "from rigger_mp import RiggerClient\n"
        "c = RiggerClient('127.0.0.1', int(sys.argv[1]))\n"
        "outs = [c.fire_hook('count', grab_result=True, c='proc', i=i)['i'] for i in range(100)]\n"
        "print(json.dumps(outs))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(rigger.server_port)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )
    assert json.loads(out.stdout) == list(range(100))
    assert all(counter(rigger).seen[("proc", i)] == 1 for i in range(100))


def test_client_works_with_descriptors_above_1024(rigger: Rigger) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard limit of open files is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        port = rigger.server_port
        assert port is not None
        with RiggerClient(HOST, port) as client:
            assert client.ping()
            assert client._sock is not None and client._sock.fileno() >= 1024
            assert client.ping()  # the idle check before reuse must not fail
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_event_after_a_too_large_one_is_fired_on_a_new_connection() -> None:
    """The server answers ``too_large`` and closes: the client must not send the next
    message on that connection (it met the reset and the event was lost, at random)."""
    rigger = make_rigger(max_message_bytes=512)
    try:
        with RiggerClient(HOST, port_of(rigger), timeout=WAIT) as client:
            for i in range(200):
                with pytest.raises(RemoteError) as info:
                    client.fire_hook("count", c="big", i=i, pad="x" * 1000)
                assert info.value.code == "too_large"
                assert client.fire_hook("count", c="ok", i=i)
    finally:
        rigger.stop()  # drains: every acked event has run
    assert {k: n for k, n in counter(rigger).seen.items() if k[0] == "ok"} == {
        ("ok", i): 1 for i in range(200)
    }
