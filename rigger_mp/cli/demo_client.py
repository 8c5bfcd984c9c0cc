"""The client side of ``rigger-mp demo``: a test session, run in its own process.

It plays a test runner on another host: over TCP it fires ``start_session``, then for
each test ``start_test``, writes the test's artifacts (a console log of a couple of MB and
two screenshot-like files that do not compress) into the test's artifact directory, fires
``finish_test`` with a result, and finally ``finish_session``. After each test it prints
``test <n> <result>`` on stdout, which the demo's progress bar follows.

``python -m rigger_mp.cli.demo_client HOST PORT TESTS ROOT [--seed N]``
"""

from __future__ import annotations

import argparse
import random
import sys
import uuid
from pathlib import Path
from typing import Any

from ..client import RiggerClient
from ..errors import RiggerError, describe_error
from ..plugins.artifacts import artifact_dir

MODULES = ("login", "cart", "checkout", "search", "profile", "admin", "reports", "api")
LOG_LINES = 22_000
SCREENSHOT_BYTES = 160 * 1024
RESULTS = ("passed",) * 17 + ("failed", "skipped", "error")

_WORDS = (
    "GET", "POST", "PUT", "user", "cart", "checkout", "item", "price", "total", "session",
    "token", "render", "widget", "click", "wait", "element", "found", "timeout", "retry", "ok",
    "navigate", "page", "loaded", "assert", "value", "expected", "got", "request", "response",
    "200", "302", "404", "500", "db", "query", "rows", "cache", "hit", "miss",
)


def _messages(rnd: random.Random) -> list[str]:
    """The message bodies a log is made of: repetitive, as real logs are."""
    levels = ("DEBUG", "DEBUG", "INFO", "INFO", "INFO", "WARNING")
    return [
        f"{rnd.choice(levels)} [{rnd.choice(_WORDS)}] {' '.join(rnd.choices(_WORDS, k=9))}"
        for _ in range(600)
    ]


def write_artifacts(path: Path, rnd: random.Random, messages: list[str], started: float) -> int:
    """Write one test's console log and screenshots; return the bytes written."""
    path.mkdir(parents=True, exist_ok=True)
    stamps = [started + i * 0.0137 for i in range(LOG_LINES)]
    picks = rnd.choices(messages, k=LOG_LINES)
    ids = [rnd.randrange(1_000_000) for _ in range(LOG_LINES)]
    text = "".join(f"{t:.3f} {m} id={i}\n" for t, m, i in zip(stamps, picks, ids, strict=True))
    (path / "console.log").write_text(text)
    written = len(text)
    for n in (1, 2):
        data = rnd.randbytes(SCREENSHOT_BYTES)  # a PNG is already compressed
        (path / f"screenshot-{n}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + data)
        written += 8 + len(data)
    return written


def run(host: str, port: int, tests: int, root: Path, seed: int = 1) -> int:
    """Fire the session; return 0 when every event was accepted."""
    rnd = random.Random(seed)
    messages = _messages(rnd)
    run_id = uuid.uuid4().hex
    with RiggerClient(host, port, timeout=60.0) as client:
        client.fire_hook("start_session", run_id=run_id)
        for n in range(tests):
            location = f"tests/test_{MODULES[n % len(MODULES)]}.py"
            name = f"test_case_{n:04d}[{rnd.choice(('chrome', 'firefox'))}]"
            where: dict[str, Any] = {"test_name": name, "test_location": location, "run_id": run_id}
            client.fire_hook("start_test", **where)
            write_artifacts(
                artifact_dir(root, location, name, run_id), rnd, messages, 1_700_000_000.0 + n * 300
            )
            result = rnd.choice(RESULTS)
            client.fire_hook("finish_test", test_result=result, **where)
            print(f"test {n + 1} {result}", flush=True)
        client.fire_hook("finish_session", run_id=run_id)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rigger_mp.cli.demo_client", description=__doc__
    )
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("tests", type=int)
    parser.add_argument("root", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        return run(args.host, args.port, args.tests, args.root, args.seed)
    except (OSError, RiggerError) as exc:
        print(f"demo client: {describe_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the demo reports it
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
