"""Running the graft CLI as a user does (a subprocess) and checking its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

GRAFT = [sys.executable, "-m", "graft.cli"]


def run_graft(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GRAFT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {}), "COLUMNS": "200"},
    )


def assert_one_clear_error(result: subprocess.CompletedProcess[str], fragment: str) -> str:
    """Exit code 2, no traceback, exactly one ``error:`` line naming ``fragment``; returns it."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0], lines[0]
    return lines[0]
