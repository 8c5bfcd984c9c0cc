"""The pytest plugin's command-line options and ini keys (``pytest --help`` lists them
under "rigger_mp"), and the defaults they name.

Only pytest and the standard library: pytest imports this module in every run, through
:mod:`rigger_mp.pytest_plugin`.
"""

from __future__ import annotations

import pytest

TOKEN_ENV = "RIGGER_MP_TOKEN"
"""rigger_mp.protocol.TOKEN_ENV, spelled out so as not to import the protocol in every
pytest run; tests/test_pytest_plugin.py checks the two agree."""
MAX_FAILURE_BYTES = 64 * 1024
"""Default of ``max_failure_bytes``: a test's failure text, as sent."""
MAX_CAPTURE_BYTES = 256 * 1024
"""Default of ``max_capture_bytes``: all of a test's captured output together, as sent."""
MAX_SHARDS = 1024
"""The most ``--rigger-shards``: rigger_mp.plugins.runs.MAX_SESSIONS, the sessions a run
keeps (spelled out, as TOKEN_ENV is; tests/test_shards.py checks the two agree)."""


def add_options(parser: pytest.Parser) -> None:
    """Add the plugin's options and ini keys to ``parser``."""
    group = parser.getgroup("rigger_mp", "fire test events to a rigger_mp dispatcher")
    group.addoption(
        "--rigger",
        metavar="HOST:PORT",
        help="fire start_session/start_test/finish_test/finish_session to this dispatcher",
    )
    group.addoption(
        "--rigger-config",
        metavar="FILE",
        help="run a dispatcher from this rigger_mp config for the session",
    )
    group.addoption(
        "--rigger-token",
        metavar="TOKEN",
        help=f"the dispatcher's server_token (default: ${TOKEN_ENV})",
    )
    group.addoption("--rigger-run-id", metavar="ID", help="run_id of the events (default: random)")
    group.addoption(
        "--rigger-shards",
        metavar="N",
        type=int,
        help="the run is N pytest processes (shards) sharing its --rigger-run-id: it ends "
        "once N have finished, not when the ones started so far have",
    )
    group.addoption(
        "--rigger-artifacts",
        metavar="DIR",
        default="rigger-artifacts",
        help="artifact root of the --rigger-config dispatcher, and where tests' files stay "
        "when the --rigger dispatcher is on another host (default: ./%(default)s)",
    )
    for key, default, what in (
        ("failure", MAX_FAILURE_BYTES, "failure text (longrepr)"),
        ("capture", MAX_CAPTURE_BYTES, "captured stdout, stderr and log, all phases together"),
    ):
        text = f"bytes of a test's {what} sent in its finish_test; the rest is cut, with a note"
        group.addoption(
            f"--rigger-max-{key}-bytes",
            metavar="N",
            type=int,
            help=f"{text} (default: the ini option rigger_max_{key}_bytes, else {default})",
        )
        parser.addini(f"rigger_max_{key}_bytes", text, default=str(default))
    group.addoption(
        "--rigger-spool-seconds",
        metavar="S",
        type=float,
        default=60.0,
        help="how long events wait in the spool, and the sender retries, while the "
        "dispatcher cannot be reached; then they are lost (default: %(default)s)",
    )
    group.addoption(
        "--rigger-spool-bytes",
        metavar="N",
        type=int,
        default=256 * 1024 * 1024,
        help="bytes of events one process spools at most (memory, then a temporary "
        "file); events beyond are lost (default: %(default)s)",
    )


def check_shards(config: pytest.Config) -> None:
    """``--rigger-shards`` where it can work; else a ``pytest.UsageError`` saying why."""
    shards: int | None = config.getoption("rigger_shards")
    if shards is None:
        return
    if not 1 <= shards <= MAX_SHARDS:
        raise pytest.UsageError(f"--rigger-shards: expected 1 to {MAX_SHARDS:,} processes")
    if shards > 1 and config.getoption("rigger_config") is not None:
        raise pytest.UsageError(
            "--rigger-shards: the dispatcher of --rigger-config ends with this process; "
            "shards fire to one running dispatcher (--rigger HOST:PORT)"
        )
    if shards > 1 and not config.getoption("rigger_run_id"):
        raise pytest.UsageError(
            "--rigger-shards: give the shards one run id (--rigger-run-id): each would "
            "otherwise make a run of its own and wait for shards that never come"
        )
