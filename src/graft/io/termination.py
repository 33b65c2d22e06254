"""SIGTERM ends Graft's work the way Ctrl-C does.

KFP sends SIGTERM when a run is cancelled or its pod evicted, and Kubernetes then waits a
grace period before SIGKILL. By default Python dies of SIGTERM at once, so nothing stops the
Ray job or deletes the RayJob it waits on (they would run on until their deadline, or for
ever) and the stage's MLflow run stays RUNNING. Turned into an exception, SIGTERM unwinds the
same paths as Ctrl-C (``except INTERRUPTS``, ``finally``): the wait loops stop what they
started, and the stage run ends FAILED.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, so that no ``except Exception`` swallows it; not a
    KeyboardInterrupt, which click turns into its own "Aborted!" and exit status 130."""


# What a wait loop treats as "stop what you started, then re-raise"
INTERRUPTS = (KeyboardInterrupt, Terminated)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"stopped by signal {signal.Signals(signum).name}")


def sigterm_interrupts() -> None:
    """From now on SIGTERM raises :class:`Terminated` in this process's main thread (Python
    runs signal handlers there only, and only the main thread may install one)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
