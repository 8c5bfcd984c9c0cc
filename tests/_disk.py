"""Filling a disk (the ``tiny_disk`` fixture of conftest) for the full-disk tests."""

from __future__ import annotations

import os
from pathlib import Path


def fill(directory: Path) -> None:
    """Write a file into ``directory`` until the disk is full."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
