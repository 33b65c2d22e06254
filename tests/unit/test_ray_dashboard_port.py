"""The local Ray's dashboard port is never one Ray's other components take by default (a flake:
the kernel once handed out 52365, the dashboard agent's, and Ray refused to start)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from graft.io import ray_runtime


def test_a_port_ray_reserves_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    handed_out = iter([52365, 6379, 41234])

    class Probe:
        def __enter__(self) -> Probe:
            return self

        def __exit__(self, *_: Any) -> None:
            pass

        def bind(self, _: Any) -> None:
            self.port = next(handed_out)

        def getsockname(self) -> tuple[str, int]:
            return "127.0.0.1", self.port

    monkeypatch.setattr(socket, "socket", lambda *_: Probe())
    assert ray_runtime._free_port() == 41234
