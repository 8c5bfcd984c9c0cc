"""Every Python and shell example of README.md and of the docs site (docs/) runs as written.

Each ```python, ```sh, ```bash and ```console block is one test, run in a tmp dir of its
own: Python with this venv's interpreter, shell with ``bash -e``, a console block command
by command (each ``$ `` line, with its continuation lines), its output compared with the
lines the page shows under it (a JSON line as a subset of the real one: a page leaves
out what the reader does not need). ``rigger-mp`` is on PATH from this venv.

A block may be preceded by a marker line the test reads:

- ``<!-- readme-test: needs-server -->``: a ``rigger-mp serve`` (embedded default config,
  port 0) runs for the block; ``21212`` in the block is replaced by its port. With
  ``needs-server http`` it also serves HTTP, whose port replaces ``8080``;
  ``requires=PROGRAM`` skips the block, saying so, where PROGRAM is not installed.
- ``<!-- readme-test: file NAME -->`` on a block of any language: the block is not run,
  it is written to NAME in the tmp dir of every block of the same page (a config file
  the page's examples read).
- ``<!-- readme-test: synopsis -->``: command lines with placeholders, not meant to run;
  each names a real subcommand and only options its ``--help`` lists.
- ``<!-- readme-test: skip REASON -->``: cannot run here (installs from the package index,
  needs other hosts); the reason is the skip's.

A block leaves no process behind: it runs in a session of its own, and every process
still in that session when it ends fails the test (and is killed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import psutil
import pytest

from tests.conftest import assert_processes_gone

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUN = {"python": "python", "sh": "shell", "bash": "shell", "console": "console"}
MARKER = re.compile(r"<!-- readme-test: (?P<kind>[a-z-]+)(?: (?P<arg>.*?))? -->")
KINDS = ("needs-server", "file", "synopsis", "skip")
# Blocks that are not run: output, diagrams and trees (text); configs, checked below.
SHOWN = ("text", "yaml", "toml")
DEFAULT_PORT, DEFAULT_HTTP_PORT = "21212", "8080"
SERVING = re.compile(r"rigger-mp: serving on [\d.]+:(?P<port>\d+) \(pid \d+\)")
HTTP = re.compile(r"rigger-mp: HTTP on http://[\d.]+:(?P<port>\d+)/")
TIMEOUT = 180


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    kind: str | None  # the marker's
    arg: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def ident(self) -> str:
        return f"{self.where}-{self.lang}" + (f"-{self.kind}" if self.kind else "")


def read_blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, each with the marker on the line before it.

    A fence may be indented (a block inside a list item); its text loses that indent. It
    may give a title after its language (``title="conftest.py"``), which the site shows.
    """
    name = page.relative_to(ROOT).as_posix()
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        fence = re.fullmatch(r"( *)```(\S*)(?:\s+title=\"[^\"]*\")?\s*", lines[i])
        if fence is None:
            assert not lines[i].lstrip().startswith("```"), f"{name}:{i + 1}: a fence not read"
            i += 1
            continue
        indent = fence[1]
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```"))
        marker = MARKER.fullmatch(lines[i - 1].strip()) if i else None
        kind, arg = (marker["kind"], marker["arg"] or "") if marker else (None, "")
        assert kind is None or kind in KINDS, f"{name}:{i}: unknown marker {kind!r}"
        body = [line.removeprefix(indent) for line in lines[i + 1 : end]]
        blocks.append(Block(name, i + 1, fence[2], "\n".join(body) + "\n", kind, arg))
        i = end + 1
    return blocks


BLOCKS = [block for page in PAGES for block in read_blocks(page)]
EXAMPLES = [b for b in BLOCKS if b.lang in RUN and b.kind != "file"]


def page_files(page: str) -> dict[str, str]:
    """The ``file`` blocks of ``page``: name -> text."""
    return {b.arg: b.text for b in BLOCKS if b.page == page and b.kind == "file"}


def venv_env(**extra: str) -> dict[str, str]:
    """This venv's bin first on PATH (its python, its rigger-mp), nothing of the checkout."""
    bin_dir = os.path.dirname(sys.executable)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RIGGER_MP_TOKEN")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


# -- a server for the blocks that need one ------------------------------------------------


class Server:
    """``rigger-mp serve --port 0`` (and ``--http 0``) in ``cwd``, until :meth:`close`."""

    def __init__(self, cwd: Path, http: bool) -> None:
        args = ["rigger-mp", "serve", "--port", "0", "--artifacts", str(cwd / "served")]
        self.log = cwd / "serve.log"  # a file: a pipe nobody reads could fill and block it
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [*args, *(["--http", "127.0.0.1:0"] if http else [])],
                cwd=cwd,
                env=venv_env(),
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()  # blocks until it listens, or died
        match = SERVING.match(first)
        if match is None:
            self.proc.kill()
            self.proc.communicate()
            raise AssertionError(f"serve did not start: {first!r}\n{self.log.read_text()}")
        self.port = match["port"]
        self.http_port = None
        if http:
            found = HTTP.match(self.proc.stdout.readline())
            assert found is not None, "serve --http printed no HTTP line"
            self.http_port = found["port"]
        self.children = {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}

    def substitute(self, text: str) -> str:
        text = text.replace(DEFAULT_PORT, self.port)
        return text if self.http_port is None else text.replace(DEFAULT_HTTP_PORT, self.http_port)

    def close(self) -> None:
        """Stop it unless the block did; no process of it is left.

        With ``terminate``, not a signal: a block that terminated it leaves it exiting
        for a moment, and a signal then would abandon; a terminate it no longer takes
        fails to connect, and the wait below is the same.
        """
        if self.proc.poll() is None:
            subprocess.run(
                ["rigger-mp", "terminate", "--port", self.port, "--timeout", "60"],
                env=venv_env(),
                capture_output=True,
                timeout=90,
            )
        try:
            self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise
        assert_processes_gone({self.proc.pid, *self.children})
        code = self.proc.returncode
        assert code == 0, f"serve exited {code}:\n{self.log.read_text()}"


# -- running a block ----------------------------------------------------------------------


def session_left(sid: int) -> list[psutil.Process]:
    """Live processes of session ``sid`` (the block's, once its leader has exited)."""
    left = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except (OSError, psutil.Error):
            continue
    return left


def run(argv: list[str], cwd: Path, what: str) -> str:
    """Run ``argv`` in a session of its own; its stdout; fail on a non-zero status or on a
    process it left behind."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=venv_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        # helpers that end on their parent's exit (multiprocessing's resource tracker)
        # may still be on their way out: wait on them, then whatever is left was left
        _, left = psutil.wait_procs(session_left(proc.pid), timeout=10)
        names = []
        for orphan in left:
            with contextlib.suppress(psutil.Error):
                names.append((orphan.pid, orphan.name()))
                orphan.kill()
    assert proc.returncode == 0, f"{what} exited {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    assert not names, f"{what} left processes behind: {names}"
    return out


def console_steps(text: str) -> list[tuple[str, list[str]]]:
    """(command, the output lines shown under it) for each ``$ `` of a console block.

    A command goes on over the next lines until it is complete shell words (a trailing
    backslash or an open quote continues it).
    """
    steps: list[tuple[str, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        assert lines[i].startswith("$ "), f"console block: output before a command: {lines[i]!r}"
        command = lines[i][2:]
        i += 1
        while not complete(command):
            command += "\n" + lines[i]
            i += 1
        output = []
        while i < len(lines) and not lines[i].startswith("$ "):
            output.append(lines[i])
            i += 1
        steps.append((command, output))
    return steps


def complete(command: str) -> bool:
    try:
        shlex.split(command)
    except ValueError:  # an open quote, or a backslash at the end
        return False
    return True


def subset(shown: Any, real: Any) -> bool:
    """Whether the JSON value ``shown`` is ``real`` with keys of objects left out."""
    if isinstance(shown, dict):
        return isinstance(real, dict) and all(
            key in real and subset(value, real[key]) for key, value in shown.items()
        )
    return bool(shown == real)


def check_output(command: str, shown: list[str], out: str) -> None:
    real = out.splitlines()
    assert len(real) == len(shown), f"$ {command}\nthe page shows {shown}, it printed {real}"
    for want, got in zip(shown, real, strict=True):
        try:
            want_json = json.loads(want)
        except ValueError:
            assert got == want, f"$ {command}\nthe page shows {want!r}, it printed {got!r}"
            continue
        assert subset(want_json, json.loads(got)), (
            f"$ {command}\nthe page shows {want}, it printed {got}"
        )


def check_synopsis(block: Block) -> None:
    """Each line names a real (sub)command and only options its --help lists."""
    from rigger_mp.cli.commands import build_parser

    parser = build_parser()
    for line in block.text.splitlines():
        line = re.split(r"\s#", line, maxsplit=1)[0].strip()
        if not line:
            continue
        assert line.startswith("rigger-mp "), f"{block.where}: {line!r}"
        for segment in split_alternatives(line.removeprefix("rigger-mp ")):
            words = segment.split()
            path = []
            for word in words:
                if not re.fullmatch(r"[a-z][a-z-]*", word):
                    break
                path.append(word)
            helptext = subcommand(parser, path).format_help()
            for option in re.findall(r"(?<![\w-])--?[a-zA-Z][\w-]*", segment):
                assert option in helptext, (
                    f"{block.where}: rigger-mp {' '.join(path)} has no {option}"
                )


def split_alternatives(text: str) -> list[str]:
    """``ping | status [--json] | terminate`` -> its commands; a ``|`` in ``[...]`` stays."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "|" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def subcommand(parser: argparse.ArgumentParser, path: list[str]) -> argparse.ArgumentParser:
    for name in path:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        assert subs and name in subs[0].choices, f"rigger-mp has no command {name!r}"
        parser = subs[0].choices[name]
    return parser


@pytest.mark.parametrize("block", EXAMPLES, ids=[b.ident for b in EXAMPLES])
def test_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    if block.kind == "skip":
        assert block.arg, f"{block.where}: a skip marker must say why"
        pytest.skip(f"{block.where}: {block.arg}")
    if block.kind == "synopsis":
        check_synopsis(block)
        return
    options = block.arg.split()
    for option in options:
        program = option.removeprefix("requires=")
        if program != option and shutil.which(program) is None:
            pytest.skip(f"{block.where}: needs {program}, which is not installed")
    if "http" in options:  # the http extra, as the docs say
        pytest.importorskip("aiohttp", reason="HTTP example: aiohttp is missing")
        pytest.importorskip("prometheus_client", reason="HTTP example: prometheus_client")
    block_dir = tmp_path  # with the page's file blocks
    for name, text in page_files(block.page).items():
        (block_dir / name).write_text(text, encoding="utf-8")
    server = Server(block_dir, http="http" in options) if block.kind == "needs-server" else None
    try:
        text = block.text if server is None else server.substitute(block.text)
        what = f"{block.where} ({block.lang})"
        kind = RUN[block.lang]
        if kind == "python":
            (block_dir / "block.py").write_text(text, encoding="utf-8")
            run([sys.executable, "block.py"], block_dir, what)
        elif kind == "shell":
            (block_dir / "block.sh").write_text(text, encoding="utf-8")
            run(["bash", "-e", "block.sh"], block_dir, what)
        else:
            for command, shown in console_steps(text):
                check_output(command, shown, run(["bash", "-e", "-c", command], block_dir, what))
    finally:
        if server is not None:
            server.close()


def test_the_markers_are_read() -> None:
    """Every marker sits right before a block, every block says its language, and the
    pages have what this file tests."""
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        name = page.relative_to(ROOT).as_posix()
        for number, line in enumerate(lines):
            if MARKER.fullmatch(line.strip()):  # a line of its own (not one quoted in text)
                assert lines[number + 1].lstrip().startswith("```"), f"{name}:{number + 1}: {line}"
    for block in BLOCKS:
        assert block.lang in (*RUN, *SHOWN), f"{block.where}: a block of language {block.lang!r}"
    langs = {b.lang for b in EXAMPLES if b.kind not in ("skip", "synopsis")}
    assert {"python", "sh", "console"} <= langs, langs
    skipped = {b.text for b in EXAMPLES if b.kind == "skip"}  # one example on two pages: one
    assert len(skipped) <= 5  # kept few


CHECKED = [b for b in BLOCKS if b.lang in ("yaml", "toml") and b.kind is None]


@pytest.mark.parametrize("block", CHECKED, ids=[b.ident for b in CHECKED])
def test_config_block_is_valid(block: Block, tmp_path: Path) -> None:
    """A YAML block is a config ``rigger-mp serve --check`` accepts; a TOML block parses."""
    if block.lang == "toml":
        tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
        tomllib.loads(block.text)
        return
    (tmp_path / "block.yaml").write_text(block.text, encoding="utf-8")
    run(["rigger-mp", "serve", "--check", "-c", "block.yaml"], tmp_path, block.where)


# -- the reference pages against the code -------------------------------------------------


def page_text(name: str) -> str:
    return (ROOT / "docs" / name).read_text(encoding="utf-8")


def table_keys(text: str) -> set[str]:
    """The first cells of a page's table rows that are one word in backticks."""
    return set(re.findall(r"^\| `([a-z_]+)` \|", text, re.MULTILINE))


def test_config_reference_lists_every_key() -> None:
    """docs/config.md has a row for each top-level key RiggerConfig reads, and no row for
    a key it does not (the plugin-instance tables aside)."""
    from dataclasses import fields

    from rigger_mp import RiggerConfig

    keys = {f.name for f in fields(RiggerConfig)} - {"source", "raw"}
    text = page_text("config.md")
    top_level = text[: text.index("## Plugin instances")]
    assert table_keys(top_level) == keys, table_keys(top_level) ^ keys


def test_cli_reference_lists_every_command_and_option() -> None:
    """docs/cli.md names every rigger-mp command, with a section each, and every option."""
    from rigger_mp.cli.commands import build_parser

    text = page_text("cli.md")
    headings = {
        h for line in re.findall(r"^## (.+)$", text, re.MULTILINE) for h in line.split(", ")
    }

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    command = f"rigger-mp {' '.join([*path, name])}"
                    if path:  # a subcommand's subcommand: in the synopsis
                        assert command in text, f"docs/cli.md: no {command}"
                    else:
                        assert name in headings, f"docs/cli.md: no section for {command}"
                    walk(sub, [*path, name])
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert re.search(rf"(?<![\w-]){option}(?![\w-])", text), (
                        f"docs/cli.md: rigger-mp {' '.join(path)} {option} is not documented"
                    )

    walk(build_parser(), [])


def test_errors_page_lists_every_exception() -> None:
    """docs/errors.md has a row for each exception rigger_mp exports, and for the
    journal's."""
    import rigger_mp
    import rigger_mp.journal.errors

    rows = set(re.findall(r"^\| `(\w+)`", page_text("errors.md"), re.MULTILINE))
    exported = [getattr(rigger_mp, name) for name in rigger_mp.__all__]
    exported += vars(rigger_mp.journal.errors).values()
    exceptions = {e.__name__ for e in exported if isinstance(e, type) and issubclass(e, Exception)}
    assert exceptions and exceptions <= rows, exceptions - rows


def test_pytest_page_lists_every_option() -> None:
    """docs/pytest.md has a row for each option the pytest plugin adds."""
    import rigger_mp.pytest_plugin

    class Options:
        """Takes the plugin's options as pytest's parser would, keeping their names."""

        def __init__(self) -> None:
            self.names: set[str] = set()

        def getgroup(self, *args: Any, **kwargs: Any) -> Options:
            return self

        def addoption(self, *names: str, **kwargs: Any) -> None:
            self.names.update(names)

    options = Options()
    rigger_mp.pytest_plugin.pytest_addoption(cast(pytest.Parser, options))
    rows = set(re.findall(r"^\| `(--[\w-]+)[ `]", page_text("pytest.md"), re.MULTILINE))
    assert options.names and options.names == rows, options.names ^ rows


def module_names(path: Path) -> set[str]:
    """The names a module assigns at its top level or in a class body."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_limits_table_names_real_bounds() -> None:
    """Each constant the limits table names is assigned in the module it names, and each
    config key it names is a key (or a plugin's key, or a serve option)."""
    from dataclasses import fields

    from rigger_mp import RiggerConfig

    text = page_text("operating.md")
    table = text[text.index("## Limits") : text.index("## Security")]
    rows = [line.split(" | ")[1] for line in table.splitlines() if line.startswith("| ")][2:]
    keys = {f.name for f in fields(RiggerConfig)}
    named = 0
    for cell in rows:
        for constants, module in re.findall(r"((?:`[A-Z_]+`(?:, )?)+) \(([\w/]+\.py)\)", cell):
            defined = module_names(ROOT / "rigger_mp" / module)
            for constant in re.findall(r"`([A-Z_]+)`", constants):
                assert constant in defined, f"the limits table: {constant} is not in {module}"
                named += 1
        if "(plugin key)" not in cell:
            for key in re.findall(r"`([a-z_]+)`", cell):
                assert key in keys, f"the limits table: {key} is not a config key"
    assert named >= 10  # the table was read


def test_performance_page_quotes_the_committed_results() -> None:
    """docs/performance.md names the date and commit of each results file it quotes."""
    text = page_text("performance.md")
    for name in ("latest.json", "journal.json"):
        doc = json.loads((ROOT / "benchmarks" / "results" / name).read_text(encoding="utf-8"))
        date, commit = doc["run"]["started"][:10], doc["machine"]["git_commit"]
        assert f"{date}" in text and f"commit {commit}" in text, (name, date, commit)


def test_readme_links_lead_somewhere() -> None:
    """Every relative link of README.md names a file of the repository."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\((?!https?://|#)([^)#]+)(?:#[^)]*)?\)", text)
    assert links
    for link in links:
        assert (ROOT / link).exists(), f"README.md links to {link}, which does not exist"
