# mypy: ignore-errors
# ruff: noqa
# A riggerlib-era program: written as such programs were, not to this project's rules.
"""The tests whose artifacts the collector gathers."""

import pytest


@pytest.mark.parametrize("n", range(6))
def test_numbers(n):
    assert n % 4 != 3


def test_boom():
    assert True


def test_skipped():
    pytest.skip("not today")
