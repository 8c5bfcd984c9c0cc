"""The server process's small parts alone: lifecycles, reply order, the token check."""

from __future__ import annotations

import pytest

from rigger_mp.lifecycle import move
from rigger_mp.server.auth import TokenCheck
from rigger_mp.server.connection import CONN_MOVES, ConnPhase
from rigger_mp.server.reply_order import ReplyOrder
from rigger_mp.server.router import SERVER_MOVES, ServerPhase


def test_the_server_process_moves_one_way_to_stopping() -> None:
    assert set(SERVER_MOVES) == set(ServerPhase)
    refusing = move(SERVER_MOVES, ServerPhase.ACCEPTING, ServerPhase.REFUSING)
    assert move(SERVER_MOVES, refusing, ServerPhase.STOPPING) is ServerPhase.STOPPING
    for back in (ServerPhase.ACCEPTING, ServerPhase.REFUSING):
        with pytest.raises(RuntimeError, match="no move from STOPPING"):
            move(SERVER_MOVES, ServerPhase.STOPPING, back)
    with pytest.raises(RuntimeError):
        move(SERVER_MOVES, ServerPhase.REFUSING, ServerPhase.ACCEPTING)


def test_a_connection_never_comes_back() -> None:
    assert set(CONN_MOVES) == set(ConnPhase)
    assert move(CONN_MOVES, ConnPhase.OPEN, ConnPhase.LOST) is ConnPhase.LOST
    assert move(CONN_MOVES, ConnPhase.FINISHING, ConnPhase.LOST) is ConnPhase.LOST
    for state in ConnPhase:
        with pytest.raises(RuntimeError):
            move(CONN_MOVES, ConnPhase.LOST, state)
    with pytest.raises(RuntimeError):
        move(CONN_MOVES, ConnPhase.FINISHING, ConnPhase.OPEN)


def test_replies_are_due_in_the_order_of_their_messages() -> None:
    order = ReplyOrder()
    assert not order.put(2, b"c") and not order.put(1, b"b")  # early: they wait
    assert order.has(1) and not order.has(0) and order.due == []
    assert order.put(0, b"a")  # 0 releases 1 and 2
    assert order.next == 3 and order.take() == b"abc" and order.due == []
    assert order.has(0) and not order.has(3)
    assert order.put(3, b"d") and order.take() == b"d"


def test_the_token_check_counts_failures_up_to_the_limit() -> None:
    check = TokenCheck(b"s3cret", max_failures=2)
    assert not check.authed
    assert check.check("nope") == "wrong token" and not check.exhausted
    last = check.check("\ud800")  # a lone surrogate is just a wrong token
    assert last is not None and "closing the connection" in last and check.exhausted
    assert check.check("s3cret") is None and check.authed and not check.exhausted
    assert TokenCheck(None, 5).authed
