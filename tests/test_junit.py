"""The junit plugin: junit.xml per run, read back with junitparser and validated against
the JUnit schema pytest validates its own --junitxml against (junit-10.xsd, from pytest's
source distribution, fetched once into pytest's cache)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import junitparser
import pytest
import xmlschema

from rigger_mp import PluginError, Rigger
from rigger_mp.cli.serve import DEFAULT_CONFIG
from rigger_mp.core.loading import resolve_plugin
from rigger_mp.errors import UnsafePath
from rigger_mp.plugins import junit
from rigger_mp.plugins.junit import JUnitPlugin, class_and_name, xml_text
from rigger_mp.pytest_plugin import with_report
from tests import _junit_schema, _story


@pytest.fixture(scope="session")
def junit_schema(request: pytest.FixtureRequest) -> xmlschema.XMLSchema:
    return _junit_schema.load(request.config)


def config(root: Path, **keys: Any) -> dict[str, Any]:
    return {"plugins": {"junit": {"plugin": "junit", "dir": str(root), **keys}}}


@pytest.fixture
def story(tmp_path: Path) -> Iterator[Path]:
    """The story run's junit.xml."""
    with Rigger(config(tmp_path)) as rigger:
        _story.fire_run(rigger, tmp_path, "run-1")
    yield tmp_path / "run-1" / "junit.xml"


def test_the_file_is_valid_and_counts_what_the_events_said(
    story: Path, junit_schema: xmlschema.XMLSchema
) -> None:
    junit_schema.validate(str(story))
    xml = junitparser.JUnitXml.fromfile(str(story))
    counts = {k: getattr(xml, k) for k in ("tests", "failures", "errors", "skipped")}
    assert counts == _story.JUNIT_COUNTS
    suites = list(xml)
    assert {(s.hostname, s.name) for s in suites} == {
        ("ci-host-1", "run-1 [ci-host-1 gw0]"),
        ("ci-host-2", "run-1 [ci-host-2 gw1]"),
        # The test that never finished: no worker; the host of the session that ran it.
        ("ci-host-1", "run-1 [ci-host-1]"),
    }
    assert sum(s.tests for s in suites) == _story.JUNIT_COUNTS["tests"]
    for suite in suites:
        props = {p.name: p.value for p in suite.properties()}  # type: ignore[no-untyped-call]
        assert props["run_id"] == "run-1" and props["python"] == "3.11.7"
        if suite.hostname:
            assert props["host"] == suite.hostname
            assert props.get("worker", "") in suite.name


def test_each_case_tells_its_story(story: Path) -> None:
    xml = junitparser.JUnitXml.fromfile(str(story))
    cases = {(c.classname, c.name): c for suite in xml for c in suite}
    failed = cases[("tests.test_login", "test_bad_password")]
    (failure,) = failed.result
    assert isinstance(failure, junitparser.Failure)
    assert failure.message == "AssertionError"
    # The failure text whole, its hostile characters text (XML cannot hold \x00 or ESC).
    assert "<script>alert(1)</script>&amp;\\x1b[31m\\x00" in (failure.text or "")
    assert failed.time == 1.5
    assert "trying <script>" in (failed.system_out or "")
    assert "INFO login: attempt 1" in (failed.system_out or "")
    assert failed.system_err == "----- call stderr -----\nwarning: slow backend\n"
    (error,) = cases[("tests.test_cart", "test_add")].result
    assert isinstance(error, junitparser.Error) and error.type == "error in setup"
    (skip,) = cases[("tests.test_cart", "test_remove")].result
    assert isinstance(skip, junitparser.Skipped) and skip.message == "needs a payment sandbox"
    (xfail,) = cases[("tests.test_cart", "test_discount")].result
    assert isinstance(xfail, junitparser.Skipped) and xfail.type == "pytest.xfail"
    assert cases[("tests.test_cart", "test_total")].result == []  # xpassed: a pass
    assert cases[("tests.test_search", _story.LONG_NAME)].is_passed
    (hang,) = cases[("tests.test_search", "test_hangs")].result
    assert isinstance(hang, junitparser.Error)


def test_a_flaky_test_passes_with_its_failed_attempt(story: Path) -> None:
    tree = ET.parse(story)
    (case,) = [c for c in tree.iter("testcase") if c.get("name") == "test_flaky"]
    assert [child.tag for child in case] == ["flakyFailure"]
    assert "TimeoutError: search took too long" in (case[0].text or "")


def test_without_a_run_id_the_file_is_at_the_root(tmp_path: Path) -> None:
    with Rigger(config(tmp_path)) as rigger:
        rigger.fire_hook("finish_test", test_name="t", test_result="passed", duration=0.5)
        rigger.fire_hook("finish_session").result(30)
    xml = junitparser.JUnitXml.fromfile(str(tmp_path / "junit.xml"))
    assert xml.tests == 1 and not (tmp_path / "index.html").exists()


def test_a_planted_link_is_not_followed(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "r").mkdir(parents=True)
    outside.mkdir()
    (outside / "victim").write_text("keep")
    os.symlink(outside / "victim", root / "r" / "junit.xml")
    os.symlink(outside, root / "linked")
    with Rigger(config(root)) as rigger:
        for run_id in ("r", "linked"):
            rigger.fire_hook("finish_test", test_name="t", test_result="passed", run_id=run_id)
            rigger.fire_hook("finish_session", run_id=run_id).result(30)
        instance = rigger.get_instance_obj("junit")
        assert isinstance(instance, JUnitPlugin)
        instance.writer.wait()
    assert (outside / "victim").read_text() == "keep"  # the link was replaced, not written
    assert not (root / "r" / "junit.xml").is_symlink()
    assert junitparser.JUnitXml.fromfile(str(root / "r" / "junit.xml")).tests == 1
    assert os.listdir(outside) == ["victim"]  # nothing through the directory link


def test_writing_through_a_linked_run_directory_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "r")
    plugin = JUnitPlugin("j", {"dir": str(tmp_path)})
    plugin.runs.finish_test({"test_name": "t", "test_result": "passed", "run_id": "r"})
    with pytest.raises(UnsafePath, match="symbolic link"):
        plugin.write(plugin.runs.finish("r", 0))
    assert os.listdir(tmp_path / "outside") == []


def test_names_and_text_for_xml() -> None:
    assert class_and_name("tests/test_x.py", "TestC.test_y[a.b]") == (
        "tests.test_x.TestC",
        "test_y[a.b]",
    )
    assert class_and_name("test_x.py", "test_z") == ("test_x", "test_z")
    assert xml_text("a\x00b\x1bc\ud800d\tok") == "a\\x00b\\x1bc\\xd800d\tok"


def test_config_is_checked_and_the_hosts_enable_it(tmp_path: Path) -> None:
    assert resolve_plugin("junit", "j", {}) is JUnitPlugin
    for bad in ({"dir": ""}, {"background": True}, {"max_tests": -1}, {"max_text_bytes": "1"}):
        with pytest.raises(PluginError):
            JUnitPlugin("j", bad)
    assert DEFAULT_CONFIG["plugins"]["junit"] == {"plugin": "junit"}
    plugins = with_report({})["plugins"]
    assert {s["plugin"] for s in plugins.values()} == {"report", "junit"}
    # A config that has one, even disabled, keeps it as it is.
    kept = with_report({"plugins": {"junit": {"plugin": "junit", "enabled": False}}})
    assert kept["plugins"]["junit"] == {"plugin": "junit", "enabled": False}
    assert junit.JUNIT_NAME == "junit.xml"
