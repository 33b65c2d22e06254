"""Run a Python script in a child process, wait for a line, then send it SIGTERM: what KFP
does to a task's pod when its run is cancelled or the pod is evicted."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path


def terminate_after(script: Path, marker: str, timeout: float = 120) -> tuple[int, str]:
    """Start ``script``; once it prints a line holding ``marker``, SIGTERM it. Its exit code
    and everything it printed (stdout and stderr) once it has ended."""
    child = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert child.stdout is not None
    printed: list[str] = []
    deadline = time.monotonic() + timeout
    for line in child.stdout:
        printed.append(line)
        if marker in line:
            break
        assert time.monotonic() < deadline, f"no {marker!r} within {timeout} s:\n{''.join(printed)}"
    else:
        raise AssertionError(f"ended before printing {marker!r}:\n{''.join(printed)}")
    child.send_signal(signal.SIGTERM)
    rest, _ = child.communicate(timeout=timeout)
    return child.returncode, "".join(printed) + rest
