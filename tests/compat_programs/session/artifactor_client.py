# mypy: ignore-errors
# ruff: noqa
# A riggerlib-era program: written as such programs were, not to this project's rules.
"""artifactor's pytest side, riggerlib style: every xdist worker fires to the collector."""

import os

import pytest
from riggerlib import RiggerClient

art_client = RiggerClient("127.0.0.1", int(os.environ["ARTIFACTOR_PORT"]))
art_client.ready = True


def _where(item):
    return item.location[0], item.name


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    location, name = _where(item)
    art_client.fire_hook("start_test", test_location=location, test_name=name,
                         slaveid=os.environ.get("PYTEST_XDIST_WORKER", "master"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call":
        return
    location, name = _where(item)
    art_client.fire_hook("filedump", test_location=location, test_name=name,
                         description="console", file_type="log",
                         contents="{} {}\n".format(name, report.outcome))
    art_client.fire_hook("finish_test", test_location=location, test_name=name,
                         test_outcome=report.outcome)
