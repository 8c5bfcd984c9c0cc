"""Headless Chromium for the tests: load a page, return its DOM after the scripts ran,
take a screenshot, or evaluate an expression in it (layout, scroll position).

Each call runs one ``chromium --headless`` process in its own process group with a fresh
profile directory, waits for it to exit, and ends whatever is left of its group. Where
Chromium is missing the tests that need it skip, loudly; in CI (``CI=true``) they fail
instead unless ``.ci/run`` said it could not install it (``RIGGER_MP_NO_BROWSER`` set to
the reason), since a browser test that silently never runs proves nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

TIMEOUT = 60.0
FLAGS = (
    "--headless",
    "--no-sandbox",  # the CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-crash-reporter",
    "--disable-breakpad",
    "--hide-scrollbars",
)


def chromium() -> str:
    """The Chromium binary; skips (or fails in CI) where there is none."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    no_browser = os.environ.get("RIGGER_MP_NO_BROWSER")
    if os.environ.get("CI") == "true" and not no_browser:
        pytest.fail("CI=true but no Chromium on PATH although .ci/run installs it")
    pytest.skip(
        "BROWSER TESTS NOT RUN: Chromium is not installed and could not be "
        f"({no_browser or 'install it: apt-get install -y chromium'})"
    )


def _run(args: list[str]) -> str:
    with tempfile.TemporaryDirectory(prefix="rigger_mp-chromium-") as profile:
        proc = subprocess.Popen(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            # Helpers (zygote, crash handler) may outlive the browser: end the group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.returncode is None:
                proc.wait()
    if proc.returncode != 0:
        raise AssertionError(f"chromium exited {proc.returncode}: {err[-2000:]}")
    return out


def dump_dom(page: Path, fragment: str = "") -> str:
    """The serialised DOM of ``page`` (opened as a file:// URL) once its scripts ran."""
    return _run(["--dump-dom", page.absolute().as_uri() + fragment])


def screenshot(
    page: Path, out: Path, fragment: str = "", size: tuple[int, int] = (1200, 900)
) -> Path:
    """A PNG of ``page`` at ``size`` (width, height), written to ``out``."""
    _run(
        [
            f"--screenshot={out.absolute()}",
            f"--window-size={size[0]},{size[1]}",
            page.absolute().as_uri() + fragment,
        ]
    )
    return out


def dump_url(url: str, budget_ms: int = 5000, host_rules: str | None = None) -> str:
    """The serialised DOM of ``url`` (an http:// page) after ``budget_ms`` of virtual
    time: its fetches and timers have run (virtual time waits on the network).
    ``host_rules``: Chromium's ``--host-resolver-rules`` (``MAP evil.example 127.0.0.1``
    makes a host name resolve to loopback in this browser only)."""
    rules = [f"--host-resolver-rules={host_rules}"] if host_rules else []
    return _run([*rules, f"--virtual-time-budget={budget_ms}", "--dump-dom", url])


def screenshot_url(
    url: str, out: Path, size: tuple[int, int] = (1200, 900), budget_ms: int = 5000
) -> Path:
    """A PNG of ``url`` after ``budget_ms`` of virtual time, written to ``out``."""
    _run(
        [
            f"--virtual-time-budget={budget_ms}",
            f"--screenshot={out.absolute()}",
            f"--window-size={size[0]},{size[1]}",
            url,
        ]
    )
    return out


def evaluate(
    page: Path,
    expression: str,
    fragment: str = "",
    size: tuple[int, int] = (1200, 900),
    screenshot: Path | None = None,
) -> Any:
    """The value of the JavaScript ``expression`` in ``page`` (opened as a file:// URL
    with ``fragment``) once it has loaded: layout and scroll position included, which a
    dumped DOM does not show; with ``screenshot``, a PNG of the viewport is written there
    after the expression (a promise is awaited: say, for the images). Drives Chromium
    over the DevTools protocol (aiohttp's WebSocket client)."""
    return evaluate_url(page.absolute().as_uri() + fragment, expression, size, screenshot)


def evaluate_url(
    url: str,
    expression: str,
    size: tuple[int, int] = (1200, 900),
    screenshot: Path | None = None,
) -> Any:
    """:func:`evaluate` of an http:// (or any) ``url``."""
    with tempfile.TemporaryDirectory(prefix="rigger_mp-chromium-") as profile:
        proc = subprocess.Popen(
            [
                chromium(),
                *FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                f"--window-size={size[0]},{size[1]}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            assert proc.stderr is not None
            for line in proc.stderr:  # Chromium names its DevTools address first
                if line.startswith("DevTools listening on "):
                    address = line.split()[-1]
                    break
            else:
                raise AssertionError(f"chromium exited {proc.wait()} before DevTools listened")
            return asyncio.run(
                asyncio.wait_for(
                    _devtools_evaluate(address, url, expression, size, screenshot), TIMEOUT
                )
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()


async def _devtools_evaluate(
    browser_ws: str, url: str, expression: str, size: tuple[int, int], screenshot: Path | None
) -> Any:
    import aiohttp

    http = "http://" + browser_ws.split("/")[2]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{http}/json/list") as answer:
            targets = await answer.json()
        target = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
        async with session.ws_connect(target, max_msg_size=0) as ws:
            ids = iter(range(1, 1000))

            async def call(method: str, **params: Any) -> dict[str, Any]:
                ident = next(ids)
                await ws.send_json({"id": ident, "method": method, "params": params})
                async for message in ws:
                    data = json.loads(message.data)
                    if data.get("id") == ident:
                        if "error" in data:
                            raise AssertionError(f"{method}: {data['error']}")
                        result: dict[str, Any] = data["result"]
                        return result
                raise AssertionError(f"DevTools closed before answering {method}")

            await call("Page.enable")
            await call(  # the viewport itself, whatever the window's frame takes
                "Emulation.setDeviceMetricsOverride",
                width=size[0],
                height=size[1],
                deviceScaleFactor=1,
                mobile=False,
            )
            await ws.send_json({"id": 0, "method": "Page.navigate", "params": {"url": url}})
            async for message in ws:  # the navigation's answer comes before its load event
                if json.loads(message.data).get("method") == "Page.loadEventFired":
                    break
            value = await call(
                "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
            )
            if "exceptionDetails" in value:
                raise AssertionError(f"{expression}: {value['exceptionDetails']}")
            if screenshot is not None:
                shot = await call("Page.captureScreenshot", format="png")
                screenshot.write_bytes(base64.b64decode(shot["data"]))
            return value["result"].get("value")
