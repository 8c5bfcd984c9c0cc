"""Reading and validating the configuration: a YAML file, a mapping, or nothing.

Every fault raises :class:`ConfigError` naming the source, the key and what was wrong,
so that a typo is never silently ignored.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import ConfigError
from ..protocol import (
    DEDUP_WINDOW,
    DEFAULT_PORT,
    MAX_DEDUP_WINDOW,
    MAX_HOOK_NAME,
    MAX_JSON_DEPTH,
)

ConfigSource = str | os.PathLike[str] | Mapping[str, Any] | None

START_METHODS = ("forkserver", "spawn", "fork")
POOLS = ("local", "dask")
JOURNAL_SYNC_LEVELS = ("normal", "full")


@dataclass(frozen=True)
class InstanceConfig:
    """One plugin instance: its ident, the plugin name it uses and its whole mapping."""

    ident: str
    plugin: str
    enabled: bool
    background: bool | str
    """True: every hook in the worker pool; "io": every hook in the I/O lane."""
    data: dict[str, Any]


@dataclass(frozen=True)
class RiggerConfig:
    """The validated configuration; ``raw`` keeps the mapping as it was given."""

    source: str
    raw: dict[str, Any]
    squash_exceptions: bool = False
    threaded: bool = False
    server_enabled: bool = False
    server_address: str = "127.0.0.1"
    server_port: int = DEFAULT_PORT
    server_token: str | None = None
    max_message_bytes: int = 1024 * 1024
    idle_timeout: float = 300.0
    # -- TCP connection bounds, so that no client can exhaust the server process: --
    # -- see ServerSettings for what each bounds --
    max_connections: int | None = None
    drain_timeout: float = 30.0
    auth_timeout: float = 10.0
    max_auth_failures: int = 5
    max_protocol_errors: int = 100
    max_messages_per_turn: int = 256
    max_buffered_replies_bytes: int = 64 * 1024 * 1024
    max_json_depth: int = MAX_JSON_DEPTH
    max_hook_name_length: int = MAX_HOOK_NAME
    dedup_window: int = DEDUP_WINDOW
    server_heartbeat: float = 2.0
    workers: int | None = None
    start_method: str | None = None
    max_tasks_per_worker: int | None = None
    worker_memory_limit_mb: float | None = None
    pool: str = "local"
    dask_scheduler: str | None = None
    dask_workers: int | None = None
    dask_connect_timeout: float = 30.0
    dask_listen: str | None = None
    # The journal, so that accepted events survive a crash: see rigger_mp.core.journaling.
    journal: str | None = None
    journal_sync: str = "normal"
    journal_max_attempts: int = 3
    # The HTTP front (rigger_mp.server.http; the `http` extra): off while http_port is None.
    http_address: str = "127.0.0.1"
    http_port: int | None = None
    http_max_connections: int = 256
    http_allowed_hosts: list[str] = field(default_factory=list)
    # The live run view of the HTTP front (rigger_mp.server.run_board, .run_view).
    live_max_tests: int = 100_000
    live_max_subscribers: int = 16
    # The I/O lane (rigger_mp.pool.io_lane): async def hooks with bg="io".
    io_concurrency: int = 64
    io_timeout: float = 300.0
    # Memory bounds of the main process, whatever names clients invent: see the docs'
    # limits table.
    max_cached_plans: int = 10_000
    status_window: int = 10_000
    status_window_bytes: int = 16 * 1024 * 1024
    max_reply_bytes: int = 16 * 1024 * 1024
    # Uploads (the attach op): per file, per run, and the free space they must leave.
    max_attach_bytes: int = 512 * 1024 * 1024
    max_run_bytes: int = 20 * 1024**3
    min_free_disk_bytes: int = 1024**3
    plugins: dict[str, InstanceConfig] = field(default_factory=dict)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


# key -> (check, what a valid value is, for the error message)
_TOP_LEVEL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "squash_exceptions": (_is_bool, "a boolean"),
    "threaded": (_is_bool, "a boolean"),
    "server_enabled": (_is_bool, "a boolean"),
    "server_address": (_is_str, "a string (host name or IP address)"),
    "server_port": (lambda v: _is_int(v) and 0 <= v <= 65535, "an integer from 0 to 65535"),
    "server_token": (_optional(lambda v: _is_str(v) and v != ""), "a non-empty string or null"),
    "max_message_bytes": (lambda v: _is_int(v) and v >= 64, "an integer of at least 64"),
    "idle_timeout": (lambda v: _is_number(v) and v > 0, "a positive number of seconds"),
    # -- TCP connection bounds: a client meets each as an error code, never a hang --
    "max_connections": (_optional(lambda v: _is_int(v) and v >= 1), "a positive integer or null"),
    "drain_timeout": (lambda v: _is_number(v) and v > 0, "a positive number of seconds"),
    "auth_timeout": (lambda v: _is_number(v) and v > 0, "a positive number of seconds"),
    "max_auth_failures": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "max_protocol_errors": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "max_messages_per_turn": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "max_buffered_replies_bytes": (
        lambda v: _is_int(v) and v >= 64 * 1024,
        "an integer of at least 65536",
    ),
    "max_json_depth": (lambda v: _is_int(v) and 2 <= v <= 900, "an integer from 2 to 900"),
    "max_hook_name_length": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "dedup_window": (
        lambda v: _is_int(v) and 0 <= v <= MAX_DEDUP_WINDOW,
        f"an integer from 0 to {MAX_DEDUP_WINDOW}",
    ),
    "server_heartbeat": (lambda v: _is_number(v) and v > 0, "a positive number of seconds"),
    "workers": (_optional(lambda v: _is_int(v) and v >= 1), "a positive integer or null"),
    "start_method": (
        _optional(lambda v: v in START_METHODS),
        "one of " + ", ".join(START_METHODS) + " or null",
    ),
    "max_tasks_per_worker": (
        _optional(lambda v: _is_int(v) and v >= 1),
        "a positive integer or null",
    ),
    "worker_memory_limit_mb": (
        _optional(lambda v: _is_number(v) and v > 0),
        "a positive number or null",
    ),
    "pool": (lambda v: v in POOLS, "one of " + ", ".join(POOLS)),
    "dask_scheduler": (
        _optional(lambda v: _is_str(v) and "://" in v),
        "a scheduler address such as tcp://host:8786, or null",
    ),
    "dask_workers": (_optional(lambda v: _is_int(v) and v >= 1), "a positive integer or null"),
    "dask_connect_timeout": (lambda v: _is_number(v) and v > 0, "a positive number of seconds"),
    "dask_listen": (
        _optional(lambda v: _is_str(v) and v != ""),
        "a host or host:port the Dask workers connect back to, or null",
    ),
    # The HTTP front: /fire, /tasks, /stats, /metrics, the live page (needs server_enabled).
    "http_address": (_is_str, "a string (host name or IP address)"),
    "http_port": (
        _optional(lambda v: _is_int(v) and 0 <= v <= 65535),
        "an integer from 0 to 65535, or null (no HTTP)",
    ),
    "http_max_connections": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "http_allowed_hosts": (
        lambda v: isinstance(v, list) and all(_is_str(h) and h.strip() for h in v),
        "a list of host names (besides loopback and http_address)",
    ),
    # The live run view: tests it lists, pages it streams to at once.
    "live_max_tests": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "live_max_subscribers": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    # The I/O lane: hooks in flight at once, and how long each may take.
    "io_concurrency": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "io_timeout": (lambda v: _is_number(v) and v > 0, "a positive number of seconds"),
    # Memory bounds of the main process: each cache and window has a cap.
    "max_cached_plans": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "status_window": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "status_window_bytes": (lambda v: _is_int(v) and v >= 4096, "an integer of at least 4096"),
    "max_reply_bytes": (lambda v: _is_int(v) and v >= 256, "an integer of at least 256"),
    # Uploads (attach): the largest file, a run's total, the free space left on the disk.
    "max_attach_bytes": (lambda v: _is_int(v) and v >= 0, "a whole number of bytes"),
    "max_run_bytes": (lambda v: _is_int(v) and v >= 0, "a whole number of bytes"),
    "min_free_disk_bytes": (lambda v: _is_int(v) and v >= 0, "a whole number of bytes"),
    "plugins": (_optional(lambda v: isinstance(v, Mapping)), "a mapping of instance names"),
    # The journal (accepted events survive a crash): off without a path.
    "journal": (
        _optional(lambda v: isinstance(v, (str, os.PathLike)) and os.fspath(v) != ""),
        "a file path or null (no journal)",
    ),
    "journal_sync": (lambda v: v in JOURNAL_SYNC_LEVELS, "normal or full"),
    "journal_max_attempts": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
}

_INSTANCE_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "plugin": (lambda v: _is_str(v) and v != "", "a non-empty string"),
    "enabled": (_is_bool, "a boolean"),
    "background": (lambda v: _is_bool(v) or v == "io", "a boolean or io"),
}


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _hint(key: Any) -> str:
    """"did you mean ...?" for a top-level key close to a known one, else the known keys."""
    close = difflib.get_close_matches(str(key), _TOP_LEVEL, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"known keys: {', '.join(sorted(_TOP_LEVEL))}"


def yaml_line(path: str, *keys: str) -> int | None:
    """The 1-based line of the nested mapping key ``keys`` in the YAML file ``path``, if
    found. The file is composed again (``yaml.compose`` keeps each node's mark) only once
    a fault is found; a file changed or gone since it was loaded gives None."""
    try:
        with open(path, encoding="utf-8") as stream:
            node: yaml.Node | None = yaml.compose(stream, Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return None
    key_node: yaml.Node | None = None
    for name in keys:
        if not isinstance(node, yaml.MappingNode):
            return None
        key_node, node = next(
            ((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == name),
            (None, None),
        )
        if key_node is None:
            return None
    return None if key_node is None else int(key_node.start_mark.line) + 1


def _needs_extra(source: str, key: str, extra: str, modules: tuple[str, ...]) -> None:
    """ConfigError naming the extra to install if ``key`` is set and a module it needs is
    not installed (looked up, not imported: the main process does not need them)."""
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if absent:
        raise ConfigError(
            f"{source}: {key} needs the {extra} extra ({', '.join(absent)} not installed): "
            f"pip install 'rigger_mp[{extra}]'"
        )


def _read_yaml(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as stream:
            return yaml.safe_load(stream)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
        raise ConfigError(f"{path}: YAML syntax error at {where}: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {exc}") from exc


def load_config(source: ConfigSource) -> RiggerConfig:
    """Validate ``source`` (a YAML path, a mapping, or ``None`` for the defaults)."""
    data: Any
    from_file = isinstance(source, (str, os.PathLike))
    if source is None:
        name, data = "<defaults>", {}
    elif isinstance(source, Mapping):
        name, data = "<mapping>", source
    elif isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        data = _read_yaml(name)
        if data is None:
            data = {}
    else:
        raise ConfigError(
            f"config must be a YAML path, a mapping or None, not {type(source).__name__}"
        )
    if not isinstance(data, Mapping):
        raise ConfigError(f"{name}: the top level must be a mapping, got {_describe(data)}")

    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _TOP_LEVEL:
            line = yaml_line(name, str(key)) if from_file else None
            at = "" if line is None else f" on line {line}"
            raise ConfigError(f"{name}: unknown key {key!r}{at}; {_hint(key)}")
        check, expected = _TOP_LEVEL[key]
        if not check(value):
            raise ConfigError(f"{name}: {key}: expected {expected}, got {_describe(value)}")
        values[key] = value

    if values.get("http_port") is not None:
        _needs_extra(name, "http_port", "http", ("aiohttp", "prometheus_client"))
    plugins = {
        ident: _instance(name, ident, spec)
        for ident, spec in (values.pop("plugins", None) or {}).items()
    }
    if values.get("journal") is not None:
        values["journal"] = os.fspath(values["journal"])
    seconds = (
        "idle_timeout",
        "server_heartbeat",
        "dask_connect_timeout",
        "drain_timeout",
        "io_timeout",
    )
    for key in (*seconds, "auth_timeout"):
        if values.get(key) is not None:
            values[key] = float(values[key])
    return RiggerConfig(source=name, raw=dict(data), plugins=plugins, **values)


def _instance(source: str, ident: Any, spec: Any) -> InstanceConfig:
    if not isinstance(ident, str) or not ident:
        raise ConfigError(
            f"{source}: plugins: instance names must be non-empty strings, got {_describe(ident)}"
        )
    where = f"{source}: plugins.{ident}"
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping with a 'plugin' key, got {_describe(spec)}")
    if "plugin" not in spec:
        raise ConfigError(f"{where}: missing required key 'plugin' (the plugin name to use)")
    for key, (check, expected) in _INSTANCE_KEYS.items():
        if key in spec and not check(spec[key]):
            raise ConfigError(f"{where}.{key}: expected {expected}, got {_describe(spec[key])}")
    data = dict(spec)
    return InstanceConfig(
        ident=ident,
        plugin=data["plugin"],
        enabled=data.get("enabled", True),
        background=data.get("background", False),
        data=data,
    )
