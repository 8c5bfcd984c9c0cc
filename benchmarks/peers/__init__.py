"""Peers that need an environment of their own, run as subprocesses of the harness.

In-process peers (pluggy, blinker, ``concurrent.futures``, a bare socket server) live in the
scenario modules; this package holds the ones that cannot share this interpreter.
"""
