"""Benchmarks of rigger_mp, measured side by side with its peers in one run.

Run ``python -m benchmarks`` (or ``python benchmarks/run.py``); ``--quick`` for a smoke run,
``--only NAME`` for one scenario. :mod:`benchmarks.harness` holds the timing helpers, the
result record, the table, the JSON file and the chart; :mod:`benchmarks.scenarios` holds
the scenarios, one module per area; :mod:`benchmarks.peers` runs peers that need their own
environment (riggerlib).
"""
