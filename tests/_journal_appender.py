"""Child process of the journal crash tests: append from threads until killed.

``python -m tests._journal_appender PATH SYNC THREADS`` opens the journal as its owner,
prints ``ready`` and then ``SEQ TID`` for every append that returned (so committed),
flushed at once, until it is killed.
"""

from __future__ import annotations

import sys
import threading

from rigger_mp.journal import GroupCommitter, JournalStore


def main() -> None:
    path, sync, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    assert sync in ("normal", "full")
    store = JournalStore.open(path, sync=sync)  # type: ignore[arg-type]
    committer = GroupCommitter(store)
    out = threading.Lock()
    print("ready", flush=True)

    def burst(k: int) -> None:
        for i in range(10**9):
            tid = f"{k}-{i}"
            seq = committer.append(tid, "ev", {"payload": "x" * 180, "i": i})
            with out:
                sys.stdout.write(f"{seq} {tid}\n")
                sys.stdout.flush()

    workers = [threading.Thread(target=burst, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


if __name__ == "__main__":
    main()
