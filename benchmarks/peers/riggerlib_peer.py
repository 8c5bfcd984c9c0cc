"""riggerlib 3.1.6, the predecessor, as a peer: installed into its own venv on first use.

The venv lives in ``benchmarks/.peers/riggerlib/`` (git-ignored) and is made with this
interpreter's ``venv`` module, then ``pip install riggerlib==3.1.6`` from the package index.
A marker file records a finished install, so a half-made venv is rebuilt. Each measurement
runs :mod:`benchmarks.peers._riggerlib_runner` in that venv as a subprocess with a hard
timeout: riggerlib's threads are non-daemon and poll, so it must never run in the
harness's own process. If the install or a run fails, :func:`measure` returns the reason
as a string and the harness reports riggerlib as skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

VERSION = "3.1.6"
PEER_DIR = Path(__file__).resolve().parent.parent / ".peers" / "riggerlib"
RUNNER = Path(__file__).resolve().parent / "_riggerlib_runner.py"
MARKER = PEER_DIR / "installed.txt"
INSTALL_TIMEOUT = 240.0
QUICK_INSTALL_TIMEOUT = 40.0  # keeps a --quick run without network inside its budget
RUN_TIMEOUT = 60.0

_state: dict[str, str] = {}
"""Per-run memo: ``python`` (the venv's interpreter) or ``error`` (why it is unavailable)."""


def _venv_python() -> Path:
    sub = "Scripts/python.exe" if os.name == "nt" else "bin/python"
    return PEER_DIR / sub


def installed_version() -> str | None:
    """The installed riggerlib version, or None when the venv is not ready."""
    if MARKER.exists():
        return MARKER.read_text(encoding="utf-8").strip() or None
    return None


def ensure(log: Callable[[str], None], timeout: float = INSTALL_TIMEOUT) -> Path | str:
    """The peer venv's Python, installing riggerlib on first use; or the reason it failed."""
    if "python" in _state:
        return Path(_state["python"])
    if "error" in _state:
        return _state["error"]
    python = _venv_python()
    if installed_version() == VERSION and python.exists():
        _state["python"] = str(python)
        return python
    log(f"riggerlib: installing riggerlib=={VERSION} into {PEER_DIR} (first use only)")
    started = time.perf_counter()
    try:
        if PEER_DIR.exists():
            shutil.rmtree(PEER_DIR)
        PEER_DIR.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        _run([sys.executable, "-m", "venv", str(PEER_DIR)], timeout)
        _run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--timeout",
                "20",
                "--retries",
                "2",
                f"riggerlib=={VERSION}",
            ],
            max(1.0, deadline - time.monotonic()),
        )
    except subprocess.TimeoutExpired:
        _state["error"] = f"riggerlib=={VERSION} was not installed within {timeout:.0f} s"
        log(f"riggerlib: skipped ({_state['error']})")
        return _state["error"]
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        _state["error"] = f"riggerlib=={VERSION} could not be installed: {exc}"
        log(f"riggerlib: skipped ({_state['error']})")
        return _state["error"]
    MARKER.write_text(VERSION + "\n", encoding="utf-8")
    log(f"riggerlib: installed in {time.perf_counter() - started:.1f} s")
    _state["python"] = str(python)
    return python


def _run(cmd: list[str], timeout: float) -> str:
    """Run ``cmd``; return its stdout, or raise RuntimeError with the tail of its stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        errors = [line for line in lines if line.startswith("ERROR")]
        tail = (errors or lines or ["no output"])[-1][:200]
        raise RuntimeError(
            f"{Path(cmd[0]).name} {' '.join(cmd[1:3])} exited {proc.returncode}: {tail}"
        )
    return proc.stdout


def measure(
    kind: str,
    events: int,
    repeats: int,
    log: Callable[[str], None] = print,
    quick: bool = False,
) -> list[float] | str:
    """riggerlib's samples for ``kind`` (``latency``: median µs; ``throughput``: events/s).

    Returns the reason as a string when riggerlib is unavailable or its run failed.
    """
    python = ensure(log, QUICK_INSTALL_TIMEOUT if quick else INSTALL_TIMEOUT)
    if isinstance(python, str):
        return python
    cmd = [str(python), "-I", str(RUNNER), kind, str(events), str(repeats)]
    try:
        out = _run(cmd, RUN_TIMEOUT)
        doc = json.loads(out.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return f"riggerlib {kind} run exceeded {RUN_TIMEOUT:.0f} s and was killed"
    except (OSError, RuntimeError, ValueError, IndexError) as exc:
        return f"riggerlib {kind} run failed: {exc}"
    if "shims" not in _state:
        _state["shims"] = "; ".join(doc.get("shims", []))
        log(
            f"riggerlib {doc.get('version')}: shims applied for Python 3.10+/PyYAML 6: "
            f"{_state['shims']}"
        )
    if kind == "latency":
        log(
            f"riggerlib: its queue thread sleeps 0.1 s when idle, so fire-and-wait takes "
            f"~100 ms; only {events} events per repeat are timed"
        )
    samples: list[float] = [float(s) for s in doc["samples"]]
    return samples
