"""The ``rigger-mp`` command (also ``python -m rigger_mp``): argument parsing and dispatch.

Each subcommand's work lives in its own module (:mod:`rigger_mp.cli.serve`,
:mod:`rigger_mp.cli.demo`, :mod:`rigger_mp.cli.status`, :mod:`rigger_mp.cli.journal`); this
one turns arguments into calls and outcomes into exit statuses:

- 0: success;
- 2: usage or config errors (argparse's own status for bad arguments);
- 1: anything else: a dispatcher that cannot be reached, a hook that failed, ...
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .. import __version__
from ..errors import ConfigError, PluginError, RiggerError, describe_error
from ..printable import printable
from ..protocol import DEFAULT_PORT, TOKEN_ENV, UNAUTHORIZED

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

DEFAULT_HOST = "127.0.0.1"

LOG_LEVELS = ("debug", "info", "warning", "error")


class UsageError(Exception):
    """Arguments that parse but make no sense together; exits with status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with errors that say which subcommand's ``--help`` to read."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {port}")
    return port


def _http_address(text: str) -> tuple[str | None, int]:
    """``[HOST:]PORT`` of ``serve --http``: (None for the config's http_address, port)."""
    host, sep, port = text.rpartition(":")
    return (host or None) if sep else None, _port(port)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("dispatcher to talk to")
    group.add_argument("--host", default=DEFAULT_HOST, help="its address (default: %(default)s)")
    group.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="its TCP port (default: %(default)s)"
    )
    group.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"its server_token, if it has one (default: ${TOKEN_ENV})",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for a reply (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one sub-parser per subcommand, each with ``--help``."""
    parser = _Parser(
        prog="rigger-mp",
        description="Run, drive and watch a rigger_mp event-hook dispatcher.",
        epilog="Exit status: 0 success, 2 usage or config error, 1 any other failure.",
    )
    parser.add_argument("--version", action="version", version=f"rigger_mp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    serve = sub.add_parser(
        "serve",
        help="run a dispatcher with its TCP server until SIGINT, SIGTERM or terminate",
        description="Run a dispatcher with its TCP server until SIGINT, SIGTERM or a "
        "`terminate` message, then drain what was accepted and exit. Without -c it runs "
        "on the embedded default config (see --show-default-config).",
    )
    serve.add_argument("-c", "--config", metavar="CONFIG", help="YAML config file")
    serve.add_argument(
        "--check",
        action="store_true",
        help="validate the config (keys, types, plugin names) and exit",
    )
    serve.add_argument(
        "--show-default-config",
        action="store_true",
        help="print the embedded default config as YAML and exit",
    )
    serve.add_argument("--host", help="bind this address instead of the config's server_address")
    serve.add_argument(
        "--port", type=_port, help="bind this port instead of server_port (0: any free port)"
    )
    serve.add_argument(
        "--http",
        metavar="[HOST:]PORT",
        type=_http_address,
        help="also serve HTTP (/fire, /stats, /metrics, a live page at /) on PORT "
        "(0: any free port); needs the http extra: pip install 'rigger_mp[http]'",
    )
    serve.add_argument(
        "--artifacts",
        metavar="DIR",
        default="rigger-artifacts",
        help="root of the per-test artifact directories (default: ./%(default)s)",
    )
    serve.add_argument(
        "--no-journal",
        action="store_true",
        help="no journal (default: the config's journal, else DIR/rigger-journal.sqlite "
        "under --artifacts: acked events survive a crash and run at the next start)",
    )
    serve.add_argument(
        "--stop-timeout",
        type=float,
        metavar="SECONDS",
        default=30.0,
        help="after SIGINT/SIGTERM/terminate, abandon what is not done by then and exit "
        "(default: %(default)s; a second signal abandons at once)",
    )
    serve.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="what to log on stderr (default: %(default)s)",
    )

    fire = sub.add_parser(
        "fire",
        help="fire one event",
        description="Fire one event and print its tid. Each KEY=VALUE goes into the "
        'event\'s data; a VALUE is parsed as JSON when it can be (3, true, null, "x", [1]), '
        "else taken as a string. Options may come before, between or after the KEY=VALUE "
        "items.",
    )
    fire.add_argument("hook", metavar="HOOK", help="the event name, e.g. start_test")
    fire.add_argument("items", metavar="KEY=VALUE", nargs="*", help="event data")
    fire.add_argument(
        "--data", metavar="JSON", help="a JSON object of event data (KEY=VALUE items win)"
    )
    mode = fire.add_mutually_exclusive_group()
    mode.add_argument(
        "--result", action="store_true", help="wait for the event and print its output as JSON"
    )
    mode.add_argument("--wait", action="store_true", help="wait for the event to finish")
    _add_client_options(fire)

    attach = sub.add_parser(
        "attach",
        help="upload a file into a test's artifact directory on the dispatcher's host",
        description="Stream FILE to the dispatcher, which writes it into the artifact "
        "directory of the test LOCATION::NAME (<root>/<run_id>/<location>/<name>), under a "
        "temporary name renamed into place once complete; print its path relative to the "
        "artifacts root, its size and its sha256.",
    )
    attach.add_argument("file", metavar="FILE", help="the file to upload")
    attach.add_argument(
        "--test", required=True, metavar="LOCATION::NAME", help="the test, e.g. tests/a.py::t1"
    )
    attach.add_argument(
        "--name", help="its name there, a relative path such as shots/a.png (default: FILE's)"
    )
    attach.add_argument("--run-id", metavar="R", help="the run's id (the run's directory)")
    _add_client_options(attach)

    ping = sub.add_parser(
        "ping",
        help="check that a dispatcher answers",
        description="Check that a dispatcher answers: send it a ping (answered by its "
        "server process), print `pong from HOST:PORT` and exit 0; exit 1 when it cannot be "
        "reached or refuses (a wrong or missing --token).",
    )
    _add_client_options(ping)

    status = sub.add_parser(
        "status",
        help="show a dispatcher's counters, queues and workers",
        description="Events accepted/done/failed, queue depths, background jobs, each "
        "worker's pid, RSS and CPU, uptime and events/s.",
    )
    status.add_argument("--json", action="store_true", help="print the raw stats as JSON")
    status.add_argument(
        "--watch",
        metavar="SECONDS",
        type=float,
        nargs="?",
        const=2.0,
        help="refresh the table every SECONDS (default 2) until Ctrl-C",
    )
    _add_client_options(status)

    terminate = sub.add_parser(
        "terminate",
        help="stop a dispatcher cleanly (it drains first)",
        description="Ask a dispatcher to stop; it drains what it accepted, then exits. "
        "Returns once the drain is done.",
    )
    _add_client_options(terminate)
    terminate.set_defaults(timeout=600.0)

    demo = sub.add_parser(
        "demo",
        help="run the main job end to end: a test session archived in the background",
        description="Start a dispatcher (per-test log plugin, archive plugin in the worker "
        "pool, TCP server on a free port) and a separate client process that fires a test "
        "session whose tests write a few MB of artifacts each; show progress and a summary.",
    )
    demo.add_argument(
        "--tests", type=_positive_int, default=None, help="tests in the session (default: 120)"
    )
    demo.add_argument(
        "--dir", metavar="DIR", help="where artifacts go (default: a new temporary directory)"
    )
    demo.add_argument(
        "--workers", type=_positive_int, default=None, help="pool size (default: CPU count)"
    )
    demo.add_argument(
        "--pool",
        choices=("local", "dask"),
        default="local",
        help="where the archives are packed: the local pool or a Dask LocalCluster of "
        "--workers processes (needs rigger_mp[dask]; default: %(default)s)",
    )
    demo.add_argument(
        "--no-progress", action="store_true", help="no progress bar (it is off when not a tty)"
    )
    demo.add_argument(
        "--no-journal",
        action="store_true",
        help="no journal (default: DIR/rigger-journal.sqlite beside the artifacts)",
    )
    from . import journal

    journal.add_parser(sub, _Parser)
    return parser


FLAG_KEYS = ("grab_result", "wait_for_task")
"""Keys the client sends as flags of the fire message; they cannot be event data here."""


def _strict_json(text: str) -> Any:
    """JSON as the wire takes it: ``NaN`` and ``Infinity`` are not JSON."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def parse_items(items: Sequence[str], data: str | None) -> dict[str, Any]:
    """The event data of ``fire``: ``--data`` first, then each ``KEY=VALUE``."""
    result: dict[str, Any] = {}
    if data is not None:
        try:
            parsed = _strict_json(data)
        except ValueError as exc:
            raise UsageError(f"--data is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise UsageError(f"--data must be a JSON object, not {type(parsed).__name__}")
        result.update(parsed)
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UsageError(f"expected KEY=VALUE, got {item!r}")
        try:
            result[key] = _strict_json(text)
        except ValueError:
            result[key] = text
    taken = sorted(set(FLAG_KEYS) & set(result))
    if taken:
        raise UsageError(
            f"{', '.join(taken)}: reserved for the fire message's flags (use --result/--wait)"
        )
    return result


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, but ``fire``'s KEY=VALUE items may follow its options.

    argparse fills ``fire``'s positionals from the first run of them only, so in
    ``fire start_test --port N test_name=t1`` the item is left over; left-over words
    that are not options are ``fire``'s items, in command-line order. (argparse's
    ``parse_intermixed_args`` refuses a parser with sub-parsers.) Anything else left
    over is the usual "unrecognized arguments" error.
    """
    args, extra = parser.parse_known_args(argv)
    if args.command == "fire":
        args.items = [*args.items, *(word for word in extra if not word.startswith("-"))]
        extra = [word for word in extra if word.startswith("-")]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parse_args(parser, argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return _dispatch(args)
    except BrokenPipeError:
        # The reader went away (`rigger-mp journal list | head`): what it wanted was read.
        _stdout_to_devnull()
        return EXIT_OK
    except UsageError as exc:
        message = printable(f"rigger-mp {args.command}: error: {exc}", keep_lines=True)
        print(message, file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, PluginError) as exc:
        print(f"rigger-mp {args.command}: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (RiggerError, OSError) as exc:
        print(
            printable(f"rigger-mp {args.command}: {_describe(exc, args)}", keep_lines=True),
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"rigger-mp {args.command}: interrupted", file=sys.stderr)
        return 130


def _bound_events(client: Any) -> list[str] | None:
    """What the dispatcher binds, for the warning after a fire; None if it cannot say.
    The event was accepted already: a failure here must not make the command fail (a
    script would retry, and fire it twice)."""
    try:
        bound = client.stats().get("bound_events")
    except (RiggerError, OSError):
        return None
    return bound if isinstance(bound, list) else None


def _warn_if_unbound(hook: str, bound: list[str] | None) -> None:
    """On stderr: nothing at the dispatcher binds ``hook`` (a dispatcher too old to say
    what it binds, ``bound`` None, says nothing)."""
    if bound is None or hook in bound:
        return
    close = difflib.get_close_matches(hook, bound, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "it runs nothing"
    print(
        f"rigger-mp fire: warning: no plugin or callback binds {hook!r} at the dispatcher; "
        f"{hint}",
        file=sys.stderr,
    )


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush of what is still
    buffered for a closed pipe does not raise again at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _describe(exc: BaseException, args: argparse.Namespace) -> str:
    """The error line's text: rigger_mp's own message, or describe_error for the rest.

    Our errors say what failed; a bare ``OSError`` needs its type (``[Errno 104] ...``
    alone does not say it was a ``ConnectionResetError``).
    """
    text = str(exc)
    if not text or not isinstance(exc, RiggerError):
        text = describe_error(exc)
    if isinstance(exc, OSError) and args.command != "serve" and hasattr(args, "host"):
        return f"cannot reach the dispatcher at {args.host}:{args.port}: {text}"
    if getattr(exc, "code", None) == UNAUTHORIZED:  # say how to give one
        how = f"with --token TOKEN or ${TOKEN_ENV}"
        if getattr(args, "token", None) is None:
            return f"{text} (the dispatcher has a server_token: give it {how})"
        return f"{text} (give the dispatcher's server_token {how})"
    return text


def _dispatch(args: argparse.Namespace) -> int:
    command: str = args.command
    if command == "serve":
        from . import serve

        logging.basicConfig(
            level=args.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        if args.show_default_config:
            print(serve.default_config_yaml(), end="")
            return EXIT_OK
        if args.check:
            print(serve.check(args.config))
            return EXIT_OK
        return serve.serve(
            args.config,
            host=args.host,
            port=args.port,
            artifacts_root=args.artifacts,
            journal=not args.no_journal,
            http=args.http,
            stop_timeout=args.stop_timeout,
        )
    if command == "demo":
        from . import demo

        return demo.run(
            tests=args.tests,
            directory=args.dir,
            workers=args.workers,
            progress=not args.no_progress,
            pool=args.pool,
            journal=not args.no_journal,
        )
    if command == "journal":
        from . import journal

        return journal.run(args)
    return _client_command(args)


def _client_command(args: argparse.Namespace) -> int:
    from ..client import RiggerClient
    from .status import format_status

    data = parse_items(args.items, args.data) if args.command == "fire" else {}
    with RiggerClient(args.host, args.port, token=args.token, timeout=args.timeout) as client:
        if args.command == "ping":
            client.ping()
            print(f"pong from {args.host}:{args.port}")
        elif args.command == "fire":
            output = client.fire_hook(
                args.hook, grab_result=args.result, wait_for_task=args.wait, **data
            )
            if args.result:
                print(json.dumps(output, indent=2, sort_keys=True, default=repr))
            elif args.wait:
                print("done")
            else:
                print(printable(str(output)))  # the tid, as the server sent it
            _warn_if_unbound(args.hook, _bound_events(client))
        elif args.command == "status" and args.watch is not None:
            from .status import watch

            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a watch ends
                watch(client.stats, f"{args.host}:{args.port}", args.watch)
        elif args.command == "status":
            stats = client.stats()
            if args.json:
                print(json.dumps(stats, indent=2, sort_keys=True))
            else:
                print(format_status(stats, f"{args.host}:{args.port}"), end="")
        elif args.command == "attach":
            location, sep, test = args.test.rpartition("::")
            if not sep or not test:
                raise UsageError(f"--test must be LOCATION::NAME, not {args.test!r}")
            if not os.path.isfile(args.file):
                raise UsageError(f"{args.file}: not a file")
            name = args.name or os.path.basename(args.file)
            reply = client.attach(location, test, name, args.file, run_id=args.run_id)
            print(printable(f"{reply['path']} {reply['size']} bytes sha256 {reply['sha256']}"))
        elif args.command == "terminate":
            client.terminate()
            print(f"terminated the dispatcher at {args.host}:{args.port}")
        else:  # pragma: no cover - argparse only lets the commands above through
            raise UsageError(f"unknown command {args.command!r}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
