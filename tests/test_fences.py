"""Fence bookkeeping without a process or a thread: numbers, owed fences, the silence rule."""

from __future__ import annotations

import threading

from rigger_mp.server.fences import FenceLedger, Fences

LIMIT = 10.0


def test_fences_are_numbered_in_order_and_answered_up_to_a_number() -> None:
    ledger = FenceLedger(LIMIT)
    assert [ledger.ask(), ledger.ask(), ledger.ask()] == [1, 2, 3]
    ledger.passed(2)
    assert ledger.answered(1) and ledger.answered(2) and not ledger.answered(3)
    ledger.passed(1)  # a late, lower answer answers nothing less
    assert ledger.seen == 2
    ledger.passed()  # an end-of-file: every fence asked so far
    assert ledger.answered(3) and ledger.outstanding() == 0


def test_outstanding_is_the_last_fence_asked_until_it_is_answered() -> None:
    ledger = FenceLedger(LIMIT)
    assert ledger.outstanding() == 0
    ledger.ask()
    ledger.ask()
    assert ledger.outstanding() == 2
    ledger.passed(1)
    assert ledger.outstanding() == 2
    ledger.passed(2)
    assert ledger.outstanding() == 0


def test_a_fence_answered_before_it_is_sent_is_not_owed() -> None:
    ledger = FenceLedger(LIMIT)
    n = ledger.ask()
    ledger.passed()  # its server died first: the end-of-file answered it
    assert not ledger.sent(n, now=5.0)
    assert ledger.owed_since() is None


def test_owed_fences_leave_in_order_as_they_are_answered() -> None:
    ledger = FenceLedger(LIMIT)
    for now in (1.0, 2.0, 3.0):
        assert ledger.sent(ledger.ask(), now)
    assert ledger.owed_since() == 1.0
    ledger.passed(2)
    assert ledger.owed_since() == 3.0
    ledger.passed(3)
    assert ledger.owed_since() is None


def test_silence_rule_needs_an_owed_fence_and_a_waiting_intake_for_the_limit() -> None:
    ledger = FenceLedger(LIMIT)
    assert not ledger.unresponsive(now=100.0, silent_since=0.0)  # nothing owed
    ledger.sent(ledger.ask(), now=50.0)
    assert not ledger.unresponsive(now=100.0, silent_since=None)  # the intake is busy
    assert not ledger.unresponsive(now=59.9, silent_since=0.0)  # owed for less
    assert ledger.unresponsive(now=60.0, silent_since=0.0)
    # Silent for less than the limit (it sent something at 55): not yet.
    assert not ledger.unresponsive(now=60.0, silent_since=55.0)
    assert ledger.unresponsive(now=65.0, silent_since=55.0)
    ledger.passed()
    assert not ledger.unresponsive(now=1000.0, silent_since=0.0)


def test_a_waiter_wakes_when_its_fence_is_answered() -> None:
    fences = Fences(LIMIT)
    n = fences.ask()
    assert fences.sent(n) and fences.owed()
    assert not fences.wait(n, 0)
    answered = threading.Thread(target=fences.passed, args=(n,))
    answered.start()
    assert fences.wait(n, 30.0)
    answered.join()
    assert not fences.owed() and fences.outstanding() == 0
