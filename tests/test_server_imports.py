"""What each side of the TCP intake imports: the server process stays small, the main
process's side never loads the asyncio server."""

from __future__ import annotations

import json
import subprocess
import sys

from rigger_mp.server import supervisor

WAIT = 60.0

SERVER_MODULES = {
    "rigger_mp",
    "rigger_mp.protocol",
    "rigger_mp.server",
    "rigger_mp.lifecycle",
    "rigger_mp.server.acceptor",
    "rigger_mp.server.attacher",  # a connection's attach side (the uploads load on use)
    "rigger_mp.server.auth",
    "rigger_mp.server.channel",
    "rigger_mp.server.connection",
    "rigger_mp.server.dedup",
    "rigger_mp.server.http_refusal",
    "rigger_mp.server.pipe_messages",
    "rigger_mp.server.process",
    "rigger_mp.server.reply_order",
    "rigger_mp.server.router",
    "rigger_mp.server.stats_snapshot",
    "rigger_mp.server.throttle",
    "rigger_mp.printable",  # its loggers escape what events put in their records
}
JOURNAL_MODULES = {
    # With a journal the server process commits before it acks: it loads
    # its side and the journal package (stdlib + rigger_mp.errors), nothing else.
    "rigger_mp.errors",
    "rigger_mp.server.journaling",
    "rigger_mp.journal",
    "rigger_mp.journal.codec",
    "rigger_mp.journal.committer",
    "rigger_mp.journal.errors",
    "rigger_mp.journal.fire_ids",
    "rigger_mp.journal.locks",
    "rigger_mp.journal.store",
    "rigger_mp.safe_paths",  # the journal and its lock files follow no link
}
NEVER_IN_THE_SERVER = {"multiprocessing.managers", "psutil", "yaml"}


def modules_after(statement: str) -> set[str]:
    """The modules loaded in a fresh interpreter once ``statement`` has run."""
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        check=True,
        text=True,
        timeout=WAIT,
        env=supervisor._child_env(),
    ).stdout
    loaded = json.loads(out)
    assert isinstance(loaded, list)
    return set(loaded)


def test_the_server_process_imports_only_the_server_channel_pipe_messages_and_protocol() -> None:
    # The imports of the command the supervisor starts the server process with.
    imports = supervisor._SERVER_MAIN.split("; main(")[0]
    assert "rigger_mp.server.process" in imports
    loaded = modules_after(imports)
    assert {m for m in loaded if m.startswith("rigger_mp")} == SERVER_MODULES
    assert not loaded & NEVER_IN_THE_SERVER
    assert "sqlite3" not in loaded  # the journal's side is imported only with a journal


def test_with_a_journal_the_server_process_adds_only_the_journal() -> None:
    imports = supervisor._SERVER_MAIN.split("; main(")[0]
    loaded = modules_after(f"{imports}; import rigger_mp.server.journaling")
    assert {m for m in loaded if m.startswith("rigger_mp")} == SERVER_MODULES | JOURNAL_MODULES
    assert not loaded & NEVER_IN_THE_SERVER


def test_the_supervisor_does_not_import_the_asyncio_server() -> None:
    loaded = modules_after("import rigger_mp.server.supervisor")
    assert "rigger_mp.server.supervisor" in loaded
    assert "rigger_mp.server.process" not in loaded and "asyncio" not in loaded


UPLOAD_MODULES = {
    # The first attach loads the uploads and the path helpers they share with the plugins.
    "rigger_mp.errors",
    "rigger_mp.plugins",
    "rigger_mp.plugins.artifacts",
    "rigger_mp.safe_paths",
    "rigger_mp.server.uploads",
}


def test_an_upload_adds_only_the_uploads_and_the_path_helpers() -> None:
    imports = supervisor._SERVER_MAIN.split("; main(")[0]
    loaded = modules_after(f"{imports}; import rigger_mp.server.uploads")
    assert {m for m in loaded if m.startswith("rigger_mp")} == SERVER_MODULES | UPLOAD_MODULES
    assert not loaded & NEVER_IN_THE_SERVER
    assert "sqlite3" not in loaded
