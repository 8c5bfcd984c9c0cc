"""pytest's JUnit schema (``junit-10.xsd``, the one pytest validates its own
``--junitxml`` against), from the source distribution of the installed pytest, fetched
once into pytest's cache; the tests that need it skip, saying why, only when the package
index cannot be reached."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import xmlschema

XSD = "testing/example_scripts/junit-10.xsd"


def load(config: pytest.Config) -> xmlschema.XMLSchema:
    """pytest's junit-10.xsd, from the sdist of the installed pytest (kept in the cache);
    skips the calling test when the package index cannot be reached."""
    version = pytest.__version__
    assert config.cache is not None, "the cache provider is needed (no -p no:cacheprovider)"
    root = Path(str(config.cache.mkdir(f"pytest-{version}-junit-xsd")))
    xsd = root / "junit-10.xsd"
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # xdist workers fetch it once between them
        if not xsd.exists():
            download = root / "sdist"
            try:
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "pip",
                        "download",
                        "-q",
                        "--no-binary",
                        ":all:",
                        "--no-deps",
                        "--disable-pip-version-check",
                        "--timeout",
                        "20",
                        "-d",
                        str(download),
                        f"pytest=={version}",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                pytest.skip(f"cannot fetch pytest {version}'s sdist for its JUnit XSD: {exc}")
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                pytest.skip(f"cannot fetch pytest {version}'s sdist (the package index): {tail}")
            (sdist,) = download.glob("pytest-*.tar.gz")
            with tarfile.open(sdist) as archive:
                member = archive.extractfile(f"pytest-{version}/{XSD}")
                assert member is not None, f"pytest {version}'s sdist has no {XSD}"
                xsd.write_bytes(member.read())
    return xmlschema.XMLSchema(str(xsd))
