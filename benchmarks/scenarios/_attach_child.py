"""A client process of the attach benchmarks.

``python _attach_child.py upload PORT CLIENTS FILES SIZE RUN_ID``: CLIENTS connections
(one thread and one RiggerClient each) upload FILES files of SIZE bytes each.
``python _attach_child.py fire PORT CLIENTS EVENTS``: CLIENTS connections fire EVENTS
events each with ``fire_many`` (batches of 1,000).

Every connection is opened first; the process prints ``ready`` and waits for a line on
stdin, so that two child processes start together; then it prints one JSON line:
``{"seconds": wall time, "latencies": [seconds per upload]}``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from rigger_mp import RiggerClient

BATCH = 1_000


def main(argv: list[str]) -> None:
    what, port, clients = argv[0], int(argv[1]), int(argv[2])
    connections = [RiggerClient("127.0.0.1", port, timeout=600.0) for _ in range(clients)]
    for client in connections:
        client.ping()
    latencies: list[list[float]] = [[] for _ in range(clients)]

    def upload(n: int, files: int, body: bytes, run_id: str) -> None:
        client, mine = connections[n], latencies[n]
        for i in range(files):
            start = time.perf_counter()
            client.attach("bench.py", f"client{n}", f"f{i}.bin", body, run_id=run_id)
            mine.append(time.perf_counter() - start)

    def fire(n: int, events: int) -> None:
        client = connections[n]
        for first in range(0, events, BATCH):
            client.fire_many(("noop", {"c": n, "i": i}) for i in range(first, first + BATCH))

    if what == "upload":
        files, size, run_id = int(argv[3]), int(argv[4]), argv[5]
        body = os.urandom(size)
        threads = [
            threading.Thread(target=upload, args=(n, files, body, run_id)) for n in range(clients)
        ]
    else:
        events = int(argv[3])
        threads = [threading.Thread(target=fire, args=(n, events)) for n in range(clients)]
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    for client in connections:
        client.close()
    print(json.dumps({"seconds": seconds, "latencies": [x for c in latencies for x in c]}))


if __name__ == "__main__":
    main(sys.argv[1:])
