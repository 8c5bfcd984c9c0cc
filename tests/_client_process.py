"""A client process for the TCP tests: ``python _client_process.py PORT FIRST COUNT EVENTS``.

Opens COUNT connections (one RiggerClient each, client ids FIRST..FIRST+COUNT-1), prints
``ready``, waits for a line on stdin (so every process is connected before any fires),
then each connection fires EVENTS ``count`` events pipelined from its own thread. Prints
one JSON line: the number of tids each client got back.
"""

from __future__ import annotations

import json
import sys
import threading

from rigger_mp import RiggerClient


def main(argv: list[str]) -> None:
    port, first, count, events = (int(a) for a in argv)
    clients = [RiggerClient("127.0.0.1", port, timeout=60.0) for _ in range(count)]
    for client in clients:
        client.ping()  # connected now: all the connections are open at once
    print("ready", flush=True)
    sys.stdin.readline()
    acked: dict[int, int] = {}

    def fire(cid: int, client: RiggerClient) -> None:
        tids = client.fire_many(("count", {"c": cid, "i": i}) for i in range(events))
        acked[cid] = len(set(tids))

    threads = [
        threading.Thread(target=fire, args=(first + n, client)) for n, client in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()
    print(json.dumps(acked), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
