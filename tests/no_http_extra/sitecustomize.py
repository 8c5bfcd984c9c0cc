"""Put on PYTHONPATH by tests/test_cli.py: this interpreter behaves as if the http extra
(aiohttp, prometheus_client) were not installed."""

import sys

sys.modules["aiohttp"] = None  # type: ignore[assignment]
sys.modules["prometheus_client"] = None  # type: ignore[assignment]
