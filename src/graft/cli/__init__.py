"""Graft's command line: ``graft``, and ``python -m graft.cli``, which the cluster's stage jobs
run."""

from graft.cli.app import app, main

__all__ = ["app", "main"]
