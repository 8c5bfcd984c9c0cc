"""Counting a run the way a dispatcher that died does: through the journal's run map."""

from __future__ import annotations

from pathlib import Path

from rigger_mp.journal import JournalStore
from rigger_mp.journal.runs import RunMap


def died_running(path: Path, *seqs: int, finished: tuple[int, ...] = ()) -> None:
    """Leave the run map a dispatcher that started ``seqs`` (and finished ``finished``)
    and then died leaves: the next owner open of ``path`` counts it."""
    store = JournalStore.open(path)
    runs = RunMap.start(store.path, store.journal_id, store.generation)
    for seq in (*seqs, *finished):
        runs.started(seq)
    for seq in finished:
        runs.finished(seq)
    runs.close()
    store.close()
